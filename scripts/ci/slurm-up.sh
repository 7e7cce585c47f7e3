#!/usr/bin/env bash
# A one-node SLURM cluster with accounting on this machine, for the tests marked `slurm`:
# munge, MariaDB, slurmdbd (so sacct reports COMPLETED, CANCELLED, TIMEOUT …), slurmctld and
# slurmd, from Debian's packages (installed when missing). Run as root; called by .ci/run.
# Idempotent: returns at once when sinfo and sacct already answer; otherwise it starts what is
# not running (nothing that runs is restarted) and waits until the node is idle.
# Partition `debug` holds every CPU of the machine (SelectTypeParameters=CR_CPU: jobs share the
# node by CPU); a job may be requeued (JobRequeue=1) and is listed by squeue for 10 minutes
# after it ends (MinJobAge=600). Every wait is bounded (SLURM's commands themselves retry for a
# minute on a bad configuration): the script fails, naming the log to read, instead of hanging.
set -euo pipefail

# wait_for SECONDS CMD...: run CMD (5 s at most each time) until it succeeds; 1 after SECONDS.
wait_for() {
  local end=$((SECONDS + $1))
  shift
  until timeout 5 "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$end" ] && return 1
    sleep 0.5
  done
}
NODE_IDLE=(bash -c '[ "$(sinfo -h -o %T 2>/dev/null)" = idle ]')

if timeout 10 sinfo -h >/dev/null 2>&1 && timeout 10 sacct -n -X -S now >/dev/null 2>&1; then
  exit 0
fi

need=()
command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need+=(munge)
command -v slurmdbd >/dev/null 2>&1 || need+=(slurmdbd)
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))

# munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

# MariaDB for slurmdbd
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mariadb-admin ping >/dev/null 2>&1; then
  (runuser -u mysql -- /usr/sbin/mariadbd --skip-networking=0 --bind-address=127.0.0.1 \
     >/var/log/mariadbd-synthct.log 2>&1 &)
  wait_for 30 mariadb-admin ping || { echo "MariaDB did not start: /var/log/mariadbd-synthct.log" >&2; exit 1; }
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbd';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
chown slurm:slurm /var/spool/slurmctld /var/log/slurm /run/slurm
cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdbd
StorageLoc=slurm_acct_db
CONF
chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 600 /etc/slurm/slurmdbd.conf

cat >/etc/slurm/slurm.conf <<CONF
ClusterName=synthct
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
KillWait=10
OverTimeLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF

pgrep -x slurmdbd >/dev/null || /usr/sbin/slurmdbd
wait_for 30 sacctmgr -n list cluster || { echo "slurmdbd does not answer: /var/log/slurm/slurmdbd.log" >&2; exit 1; }
timeout 30 sacctmgr -i add cluster synthct >/dev/null 2>&1 || true
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
if ! wait_for 15 "${NODE_IDLE[@]}"; then  # a node that was down before a restart stays down until resumed
  timeout 10 scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  wait_for 30 "${NODE_IDLE[@]}" || { echo "node $host is not idle: /var/log/slurm/slurmctld.log, slurmd.log" >&2; exit 1; }
fi
wait_for 30 sacct -n -X -S now || { echo "sacct does not answer: /var/log/slurm/slurmdbd.log" >&2; exit 1; }
timeout 10 sinfo
timeout 60 srun --time=1 --cpus-per-task=1 true  # a job really runs
