#!/usr/bin/env bash
# Run nbval over the book's notebooks under other CPU kernel paths and thread counts.
# Usage: tools/test_variants.sh PYTHON [CAPABILITY:THREADS ...]
# Without variants: default:1, default:2, then avx2:1 and avx512:2 where this CPU has them.
# Each variant re-executes every notebook (a few minutes) and compares the summary cells with
# the committed outputs, within the tolerances they print.
set -euo pipefail
python=$1; shift
variants=("$@")
if [ ${#variants[@]} = 0 ]; then
    variants=(default:1 default:2)
    grep -qw avx2 /proc/cpuinfo 2>/dev/null && variants+=(avx2:1)
    grep -qw avx512f /proc/cpuinfo 2>/dev/null && variants+=(avx512:2)
fi
status=0
for variant in "${variants[@]}"; do
    capability=${variant%%:*}; threads=${variant##*:}
    echo "== ATEN_CPU_CAPABILITY=$capability, $threads thread(s)"
    ATEN_CPU_CAPABILITY=$capability OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
        "$python" -m pytest book -q || status=1
done
exit $status
