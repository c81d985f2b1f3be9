#!/usr/bin/env bash
# A one-node SLURM on this machine, to test the cluster launcher (feasible.launch) for real.
#
#   tools/slurm-local.sh start    install slurm-wlm and munge when missing (as root, from Debian),
#                                 write a one-node slurm.conf, start munged, slurmctld and slurmd,
#                                 wait until the node takes jobs; prints `export SLURM_CONF=...`
#   tools/slurm-local.sh stop     stop the three daemons (those started from the state folder)
#   tools/slurm-local.sh status   say whether they run and the node's state; exit 0 when usable
#   tools/slurm-local.sh env      print `export SLURM_CONF=...` (for `eval`)
#
# Everything (configuration, munge key and socket, spool, state, logs, pid files) lives under
# the state folder, FEASIBLE_SLURM_STATE (default: /tmp/feasible-slurm); nothing under /etc is
# written. Clients find this cluster through SLURM_CONF=<state>/slurm.conf. Idempotent: `start`
# on a running cluster only checks it, `stop` on a stopped one does nothing. The node takes as
# many 1-CPU tasks as the machine has CPUs (select/cons_tres, CR_CPU), tracks processes without
# cgroups (proctrack/linuxproc, task/none: a container may not delegate cgroups), and keeps no
# accounting database: job states come from squeue, which keeps ended jobs for MinJobAge.
# Ports: FEASIBLE_SLURM_PORT (slurmctld, default 6917) and the next one (slurmd).
set -euo pipefail
state=${FEASIBLE_SLURM_STATE:-/tmp/feasible-slurm}
port=${FEASIBLE_SLURM_PORT:-6917}
conf="$state/slurm.conf"
socket="$state/munge/munge.socket"
export SLURM_CONF="$conf"

say() { echo "slurm-local: $*" >&2; }

# the pid in a pid file, if that process runs
running() { local f="$state/$1.pid"; [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }

install() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    [ ${#missing[@]} = 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "missing ${missing[*]}: install Debian's slurm-wlm and munge (needs root and apt-get)"
        return 1
    fi
    say "installing ${missing[*]} (Debian's slurm-wlm and munge; about a minute, once)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        munge slurmctld slurmd slurm-client >/dev/null
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    mkdir -p "$state"/{munge,ctld,spool,log}
    cat >"$conf" <<EOF
# written by tools/slurm-local.sh: a one-node cluster for tests, everything under $state
ClusterName=feasible-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# seconds between a cancelled task's SIGTERM and its SIGKILL
KillWait=5
# ended jobs stay in squeue --states=all for this long (there is no accounting database)
MinJobAge=3600
MaxArraySize=10001
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    [ -n "$(running munged)" ] && return 0
    if [ ! -s "$state/munge/munge.key" ]; then
        head -c 1024 /dev/urandom >"$state/munge/munge.key"
    fi
    chmod 700 "$state/munge"
    chmod 400 "$state/munge/munge.key"
    munged --force --key-file="$state/munge/munge.key" --socket="$socket" \
        --pid-file="$state/munged.pid" --log-file="$state/log/munged.log" \
        --seed-file="$state/munge/munge.seed"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            say "$what did not happen within ${seconds} s; logs in $state/log"
            tail -n 20 "$state"/log/*.log >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

node_state() { sinfo -h -N -o %t 2>/dev/null | head -n 1; }
node_ready() { node_state | grep -Eq '^(idle|mix|alloc)$'; }
node_answers() { node_state | grep -Evq '(\*|~|unk|^$)'; }

start() {
    install
    mkdir -p "$state"
    [ -n "$(running slurmctld)" ] || write_conf
    start_munge
    wait_for 10 "munged answering" test -S "$socket"
    if [ -z "$(running slurmctld)" ]; then
        slurmctld -f "$conf" -i
        wait_for 20 "slurmctld answering" scontrol ping
    fi
    if [ -z "$(running slurmd)" ]; then
        slurmd -f "$conf"
    fi
    wait_for 30 "the node answering" node_answers
    # a node left drained or down by an earlier run (a task that did not end in time) serves again
    if node_state | grep -Eq '^(drain|drng|down|fail)'; then
        scontrol update NodeName="$(hostname -s)" State=RESUME
    fi
    wait_for 30 "the node becoming idle" node_ready
    say "running: slurmctld $(running slurmctld), slurmd $(running slurmd), munged $(running munged)"
    echo "export SLURM_CONF=$conf"
}

stop() {
    local name pid jobs
    if [ -n "$(running slurmctld)" ] && [ -n "$(running slurmd)" ]; then
        # end every job first, so that no step outlives the daemons it reports to
        jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
        if [ -n "$jobs" ]; then
            say "cancelling jobs $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            wait_for 60 "the jobs ending" test -z "$(squeue -h -o %A 2>/dev/null)" || true
        fi
    fi
    for name in slurmd slurmctld munged; do
        pid=$(running "$name") || continue
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        say "stopped $name ($pid)"
    done
}

status() {
    local ok=0 name
    for name in munged slurmctld slurmd; do
        if pid=$(running "$name"); then say "$name running ($pid)"; else say "$name stopped"; ok=1; fi
    done
    if [ $ok = 0 ]; then
        sinfo -N -o "%N %t %c" >&2 || ok=1
        node_ready || ok=1
    fi
    return $ok
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$conf" ;;
    *) echo "usage: $0 start|stop|status|env (state in \$FEASIBLE_SLURM_STATE, default /tmp/feasible-slurm)" >&2; exit 2 ;;
esac
