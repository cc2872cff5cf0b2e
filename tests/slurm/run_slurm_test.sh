#!/bin/bash
# A real Slurm on localhost: installs Debian's slurm-wlm and munge when absent,
# starts munged (unless one runs), slurmctld and slurmd with a private config,
# submits examples/slurm/pretrain_dsm.sbatch with 2 tasks (gloo on CPU) on a
# synthetic corpus, and checks that the job log shows two ranks training.
# Prints PASS or FAIL; exit status 0 only on PASS. Stops what it started.
#
# Env: SLURM_TEST_DIR (work dir, default a temp dir), SLURM_TEST_TIMEOUT
# (seconds for the job, default 900), SLURM_TEST_ITERS (default 6),
# PYTHON (default .venv/bin/python), SLURM_TEST_KEEP=1 keeps the work dir.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
WORK=${SLURM_TEST_DIR:-$(mktemp -d /tmp/dsm-slurm.XXXXXX)}
TIMEOUT=${SLURM_TEST_TIMEOUT:-900}
ITERS=${SLURM_TEST_ITERS:-6}
JOBS=${SLURM_TEST_JOBS:-pretrain pretrain-torchrun mine grpo sft recipe}
PIDS=()
MUNGE_PIDFILE=""
JOBID=""

log() { echo "[slurm-test] $*"; }
fail() {
  echo "[slurm-test] $*" >&2
  for f in "$WORK"/log/*.log; do [[ -f "$f" ]] && { echo "--- tail $f" >&2; tail -n 20 "$f" >&2; }; done
  echo "FAIL: $*"
  exit 1
}

cleanup() {
  local rc=$?
  if [[ -n "$JOBID" ]] && command -v scancel >/dev/null; then scancel "$JOBID" >/dev/null 2>&1 || true; fi
  # Stop only the daemons this script started, by their pids.
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [[ -n "$MUNGE_PIDFILE" && -f "$MUNGE_PIDFILE" ]]; then
    kill "$(cat "$MUNGE_PIDFILE")" 2>/dev/null || true
  fi
  [[ "${SLURM_TEST_KEEP:-0}" == 1 ]] || rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -x "$PYTHON" ]] || fail "no python at $PYTHON: run 'make install' first (or set PYTHON)"

# ---- 1. packages -------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  [[ $(id -u) == 0 ]] || fail "slurm-wlm/munge are not installed and installing them needs root"
  log "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || fail "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
    || fail "apt-get install slurm-wlm munge failed"
fi
log "$(slurmctld -V)"

mkdir -p "$WORK"/{state,spool,log,data,out} || fail "cannot create $WORK"

# ---- 2. munge ----------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 0400 /etc/munge/munge.key
fi
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running"
else
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  chmod 0755 /run/munge
  MUNGE_PIDFILE=/run/munge/munged.pid
  if id munge >/dev/null 2>&1 && command -v runuser >/dev/null; then
    runuser -u munge -- munged || fail "munged did not start"
  else
    munged --force || fail "munged did not start"
  fi
  for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n | unmunge >/dev/null 2>&1 || fail "munge credentials do not round-trip"
  log "munged started"
fi

# ---- 3. slurm.conf for this host ------------------------------------------------
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HOST=$(hostname -s)
CPUS=$(nproc); (( CPUS < 2 )) && CPUS=2
# RealMemory: datatrove's stage arrays ask --mem-per-cpu, which a node left at
# Slurm's default of 1 MB can never satisfy
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
CTLD_PORT=$(free_port); SLURMD_PORT=$(free_port)
while [[ "$SLURMD_PORT" == "$CTLD_PORT" ]]; do SLURMD_PORT=$(free_port); done
CONF=$WORK/slurm.conf
# No cgroup plugins: proctrack/linuxproc and task/none work in containers.
cat >"$CONF" <<EOF
ClusterName=dsmtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdParameters=config_overrides
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=dsm Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
export SLURM_CONF=$CONF
# Unset the variables of any allocation this script itself runs in.
unset SLURM_JOB_ID SLURM_JOBID SLURM_NODELIST SLURM_JOB_NODELIST SLURM_NTASKS SLURM_PROCID

# ---- 4. daemons ---------------------------------------------------------------
slurmctld -D -c -f "$CONF" >"$WORK/log/slurmctld.stdout.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 1; done
scontrol ping 2>/dev/null | grep -q UP || fail "slurmctld did not come up"
slurmd -D -f "$CONF" -N "$HOST" >"$WORK/log/slurmd.stdout.log" 2>&1 &
PIDS+=($!)
state=""
for _ in $(seq 1 90); do
  state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1)
  [[ "$state" == idle ]] && break
  sleep 1
done
[[ "$state" == idle ]] || fail "node $HOST is '$state', not idle: $(scontrol show node "$HOST" 2>&1 | grep -i reason)"
log "slurmctld and slurmd up on $HOST ($CPUS CPUs), node idle"

# ---- 5. jobs ---------------------------------------------------------------------
# run_job NAME STATE [VAR=VALUE ...] -- SBATCH_ARGS...: submit from the
# repository with those variables set, wait for the job to end, print its log
# and fail unless it ended in STATE; sets LOG and JOBID_DONE.
run_job() {
  local name=$1 want=$2 vars=() id log t0 jstate="" exitcode
  shift 2
  while [[ "$1" != -- ]]; do vars+=("$1"); shift; done
  shift
  JOBID=$(cd "$REPO" && env "${vars[@]}" sbatch --parsable --chdir="$REPO" \
    --output="$WORK/out/job-%j.out" "$@") || fail "sbatch of the $name job failed"
  JOBID=${JOBID%%;*}
  id=$JOBID log=$WORK/out/job-$JOBID.out t0=$SECONDS
  log "submitted $name job $id; waiting up to ${TIMEOUT}s"
  while (( SECONDS - t0 < TIMEOUT )); do
    jstate=$(scontrol show job "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    case "$jstate" in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE) break ;;
    esac
    sleep 3
  done
  exitcode=$(scontrol show job "$id" 2>/dev/null | grep -o ' ExitCode=[0-9:]*' | cut -d= -f2)
  log "$name job $id: state $jstate, exit code $exitcode, $((SECONDS - t0))s"
  echo "----- $name job log ($log) -----"
  cat "$log" 2>/dev/null || echo "(no log)"
  echo "-------------------------"
  if [[ "$jstate" != "$want" ]]; then
    [[ -z "$jstate" || "$jstate" == RUNNING || "$jstate" == PENDING ]] \
      && fail "$name job $id did not finish in ${TIMEOUT}s (state '$jstate')"
    fail "$name job $id ended $jstate (exit $exitcode)"
  fi
  LOG=$log JOBID_DONE=$id JOBID=""
}

# pretrain_job NAME [VAR=VALUE ...]: pretrain_dsm.sbatch, 2 tasks on the node,
# 6 iterations of a 2-layer model on the synthetic corpus (written once)
pretrain_job() {
  local name=$1
  shift
  DATA=$WORK/data/synth
  [[ -f "$DATA.bin" ]] || PYTHONWARNINGS=ignore "$PYTHON" -c "import sys; sys.path.insert(0, '$REPO/tests/training'); from synthetic import write_corpus; write_corpus('$DATA')" \
    || fail "could not write the synthetic corpus"
  run_job "$name" COMPLETED DATA_PATH="$DATA" TRAIN_ITERS="$ITERS" TP=1 PP=1 PYTHON="$PYTHON" PY="$PYTHON" "$@" -- \
    --job-name=dsm-slurm-test --nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 --time=30:00 \
    examples/slurm/pretrain_dsm.sbatch \
      --vocab-size 256 --seq-length 64 --num-layers 2 --micro-batch-size 2 \
      --global-batch-size 8 --lr 3e-3 --log-interval 1 --seed 7 \
      --data-cache-path "$WORK/data/cache"
}

# ---- 5a. pretraining: examples/slurm/pretrain_dsm.sbatch on 2 ranks ---------------
if [[ " $JOBS " == *" pretrain "* ]]; then
  pretrain_job pretraining
  grep -qE '^0: rank 0/2 ' "$LOG" || fail "no rank 0 of 2 in the job log"
  grep -qE '^1: rank 1/2 ' "$LOG" || fail "no rank 1 of 2 in the job log"
  grep -qE 'DP=2' "$LOG" || fail "the log does not name DP=2 (two data-parallel ranks)"
  n=$(grep -cE 'iteration +[0-9]+/ *'"$ITERS"' \| .*lm loss: ' "$LOG")
  [[ "$n" -ge "$ITERS" ]] || fail "expected $ITERS Megatron iteration lines, found $n"
  grep -qE "iteration +$ITERS/ *$ITERS \|" "$LOG" || fail "training did not reach iteration $ITERS"
  first=$(grep -oE 'lm loss: [0-9.E+-]+' "$LOG" | head -n 1 | cut -d' ' -f3)
  last=$(grep -oE 'lm loss: [0-9.E+-]+' "$LOG" | tail -n 1 | cut -d' ' -f3)
  log "job $JOBID_DONE: ranks 0 and 1 of 2 started, DP=2, $n iteration lines, lm loss $first -> $last"
  echo "PASS: slurm job $JOBID_DONE trained on 2 ranks (DP=2) for $ITERS iterations"
fi

# ---- 5b. pretraining with LAUNCHER=torchrun: one task per node, torchrun starts
# the node's 2 ranks (examples/pretrain_dsm.sh)
if [[ " $JOBS " == *" pretrain-torchrun "* ]]; then
  pretrain_job "pretraining (torchrun)" LAUNCHER=torchrun SAVE_DIR="$WORK/pretrain_torchrun"
  grep -q "(launcher torchrun): job $JOBID_DONE, 1 node(s) x 2 rank(s)" "$LOG" || fail "no torchrun launcher line for 2 ranks"
  grep -qE 'DP=2' "$LOG" || fail "the log does not name DP=2 (two data-parallel ranks)"
  grep -qE "iteration +$ITERS/ *$ITERS \|" "$LOG" || fail "training did not reach iteration $ITERS"
  echo "PASS: slurm job $JOBID_DONE trained on 2 ranks (DP=2) started by torchrun in one task (launcher torchrun)"
fi

# ---- 5c. fine-tuning batches: one task per node runs examples/{grpo,sft}_dsm.sh,
# whose torchrun starts NPROC=2 ranks (DP=2); the checkpoint holds one RNG
# state per rank, so it shows that both ranks ran and saved. Everything the
# examples write goes to $WORK (SFT from its initialisation, not runs/).
for stage in grpo sft; do
  [[ " $JOBS " == *" $stage "* ]] || continue
  run_job "$stage" COMPLETED NPROC=2 TRAIN_ITERS=3 SAVE_INTERVAL=3 SAVE_DIR="$WORK/$stage" \
      DEMO_DIR="$WORK/demo_corpus" SFT_DATA_DIR="$WORK/sft_data" PRETRAIN_DIR="$WORK/no_pretrain" PY="$PYTHON" -- \
      --job-name="dsm-$stage-test" --nodes=1 --ntasks=1 --cpus-per-task=2 --time=30:00 \
      "examples/slurm/${stage}_dsm.sbatch"
  grep -qE "iteration +3/ +3 \|" "$LOG" || fail "$stage: no Megatron line for iteration 3 of 3"
  [[ "$(cat "$WORK/$stage/latest_checkpointed_iteration.txt" 2>/dev/null)" == 3 ]] \
    || fail "$stage: no checkpoint of iteration 3 in $WORK/$stage"
  ranks=$(ls "$WORK/$stage"/iter_0000003/rng/rank_*.pt 2>/dev/null | wc -l)
  (( ranks == 2 )) || fail "$stage: expected the RNG states of 2 ranks in the checkpoint, found $ranks"
  echo "PASS: slurm $stage job $JOBID_DONE ran examples/${stage}_dsm.sh under torchrun with 2 ranks to iteration 3"
done

# ---- 5d. mining: examples/slurm/mine_corpus.sbatch, stages as datatrove job arrays --
# The input is ../shared/data/web plus tests/mining/planted.py's shards, whose
# URL, exact and near duplicates sit in different shards; dedup runs before
# recall with 4 tasks, and its kept pages must equal a local 1-task dedup's.
if [[ " $JOBS " == *" mine "* ]]; then
  WEB=$REPO/../shared/data/web
  PLANTED=$WORK/data/planted
  [[ -f "$WEB/docs.jsonl" ]] || fail "no $WEB/docs.jsonl for the mining job"
  # seed positives: math.stackexchange pages; negatives: the non-math pages
  "$PYTHON" - "$WEB/docs.jsonl" "$WORK/data" <<'PY' || fail "could not write the mining seeds"
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1])]
with open(sys.argv[2] + "/seed.jsonl", "w") as f:
    f.writelines(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows if r["domain"] == "math.stackexchange.com")
with open(sys.argv[2] + "/neg.jsonl", "w") as f:
    f.writelines(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows if r["label"] == "non_math")
PY
  "$PYTHON" "$REPO/tests/mining/planted.py" "$PLANTED" || fail "could not write the planted duplicates"
  # the driver takes one CPU; each stage task takes the other one in turn
  run_job mining COMPLETED PYTHON="$PYTHON" -- \
      --job-name=dsm-mine-test --ntasks=1 --cpus-per-task=1 --time=30:00 \
      examples/slurm/mine_corpus.sbatch --input "$WEB" "$PLANTED" --seed-positives "$WORK/data/seed.jsonl" \
        --negatives "$WORK/data/neg.jsonl" --output "$WORK/mine" --max-iterations 1 \
        --auto-accept-fraction 0.5 --domain-min-pages 3 --dim 64 --bucket 50000 \
        --compression none --tasks 4 --slurm-poll-s 2 --slurm-time 20:00 \
        --slurm-mem-per-cpu-gb 1
  MINE_JOB=$JOBID_DONE
  pages=$(cat "$WORK"/mine/final/*.jsonl 2>/dev/null | wc -l)
  arrays=$(ls -d "$WORK"/mine/logs/*/slurm_logs 2>/dev/null | wc -l)
  score_tasks=$(ls "$WORK"/mine/logs/iter_01_score/completions 2>/dev/null | wc -l)
  (( pages > 0 )) || fail "the mining job collected no pages"
  (( arrays == 11 )) || fail "expected the Slurm arrays of extract, 8 dedup stages, score and keep; found $arrays"
  (( score_tasks == 4 )) || fail "expected 4 scoring tasks (--tasks 4), found $score_tasks completed tasks"
  log "mining job $MINE_JOB: $arrays stages ran as Slurm job arrays, $pages pages collected"
  # the same dedup on the local executor with one task keeps the same pages
  "$PYTHON" "$REPO/tools/mine_corpus.py" dedup --input "$WEB" "$PLANTED" --output "$WORK/dedup_local" --tasks 1 \
    --compression none >"$WORK/log/dedup_local.log" 2>&1 || fail "the local 1-task dedup failed (see $WORK/log/dedup_local.log)"
  dedup_line=$("$PYTHON" - "$WORK/mine" "$WORK/dedup_local" "$PLANTED/answer.json" <<'PY'
import json, sys
from pathlib import Path
slurm, local, answer = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
def kept(run):
    return [json.loads(x)["id"] for p in sorted((run / "deduped").glob("*.jsonl")) for x in open(p)]
s, l = kept(slurm), kept(local)
assert s == l, f"Slurm (4 tasks) kept {len(s)} pages, local (1 task) {len(l)}; they differ"
ks = set(s)
for kind, groups in answer["groups"].items():
    for ids in groups:
        assert sum(i in ks for i in ids) == 1, f"planted {kind} group {ids}: {[i for i in ids if i in ks]} kept"
rs, rl = (json.loads((r / "report.json").read_text())["dedup"] for r in (slurm, local))
assert rs["tasks"] == 4 and rs["removed"] == rl["removed"], (rs, rl)
for kind, n in answer["removed"].items():
    assert rs["removed"][kind] >= n, (kind, rs["removed"], answer["removed"])
print(f"{rs['pages_in']} pages, removed {rs['removed']} (planted {answer['removed']}), {rs['pages_out']} kept")
PY
) || fail "the Slurm dedup does not match the planted duplicates or the local 1-task run"
  log "dedup, Slurm with 4 tasks = local with 1 task: $dedup_line"
  # a stage array Slurm refuses (more memory than the node has) ends the
  # driver with one error line naming the stage, not a traceback
  run_job "refused mining" FAILED PYTHON="$PYTHON" -- \
      --job-name=dsm-mine-refused --ntasks=1 --cpus-per-task=1 --time=10:00 \
      examples/slurm/mine_corpus.sbatch --input "$WEB" --seed-positives "$WORK/data/seed.jsonl" \
        --output "$WORK/mine_refused" --slurm-poll-s 2 --slurm-mem-per-cpu-gb 100000
  grep -q "^mine_corpus.py: error: stage extract: sbatch refused its job array" "$LOG" \
    || fail "the refused mining job did not end with the one-line stage error"
  ! grep -q Traceback "$LOG" || fail "the refused mining job printed a traceback"
  # a failed array task stops the stage with one error; the same call again redoes only that task
  resume_line=$(PATH="$(dirname "$PYTHON"):$PATH" PYTHONPATH="$REPO:$REPO/tests/mining${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" "$REPO/tests/mining/slurm_resume.py" "$WORK/resume" dsm 2>"$WORK/log/resume.log") \
    || fail "failed array task: $resume_line (log: $WORK/log/resume.log)"
  log "$resume_line"
  echo "PASS: slurm mining job $MINE_JOB ran its stages as datatrove Slurm arrays ($pages pages collected; dedup before recall kept the pages a local 1-task dedup keeps, one of each planted duplicate group); a refused stage is one error line; a failed array task is redone alone"
fi

# ---- 5e. the demo recipe as a chain of sbatch jobs (tools/recipe.py --executor slurm):
# every stage its own job, each after the previous one (--dependency=afterok),
# the last job's log ends with the stage table; toy sizes via --set.
if [[ " $JOBS " == *" recipe "* ]]; then
  ROUT=$WORK/recipe
  SETS=(--set task.train_size=300 --set task.heldout_size=40 --set task.pages=30 --set task.seed_pages=10
        --set task.rm_questions=40 --set task.planted_heldout=3 --set task.planted_gsm8k=3
        --set stages.mine.args.max_iterations=1 --set stages.mine.args.slurm_poll_s=2
        --set stages.mine.args.slurm_mem_per_cpu_gb=1 --set stages.mine.args.slurm_time=20:00
        --set stages.pretrain.args.train_iters=10 --set stages.pretrain.args.eval_interval=10
        --set stages.sft.args.train_iters=10 --set stages.reward_model.samples=2
        --set stages.reward_model.args.train_iters=4 --set stages.reward_model.args.eval_interval=4
        --set stages.rl.args.train_iters=2 --set stages.rl.args.rl_eval_interval=2
        --set stages.rl.args.rl_eval_size=40 --set stages.evaluate.args.limit=20
        --set executor.time=30:00)
  (cd "$REPO" && "$PYTHON" tools/recipe.py run --recipe examples/recipes/demo.yaml --output "$ROUT" \
      --executor slurm "${SETS[@]}") >"$WORK/log/recipe_submit.log" 2>&1 \
    || fail "recipe submission failed: $(tail -n 5 "$WORK/log/recipe_submit.log")"
  cat "$WORK/log/recipe_submit.log"
  mapfile -t RJOBS < <("$PYTHON" -c "import json,sys; [print(k, v['job'], v['log']) for k, v in json.load(open(sys.argv[1])).items()]" "$ROUT/slurm/jobs.json")
  (( ${#RJOBS[@]} == 8 )) || fail "expected 8 stage jobs, found ${#RJOBS[@]}"
  prev_end="" t0=$SECONDS
  for row in "${RJOBS[@]}"; do
    read -r stage id rlog <<<"$row"
    while (( SECONDS - t0 < TIMEOUT * 3 )); do
      jstate=$(scontrol show job "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
      case "$jstate" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;; esac
      sleep 5
    done
    info=$(scontrol show job "$id" 2>/dev/null)
    [[ "$jstate" == COMPLETED ]] || { cat "$rlog" 2>/dev/null | tail -n 30; fail "recipe stage $stage (job $id) ended '$jstate'"; }
    start=$(grep -o 'StartTime=[^ ]*' <<<"$info" | cut -d= -f2); end=$(grep -o 'EndTime=[^ ]*' <<<"$info" | cut -d= -f2)
    [[ -z "$prev_end" || ! "$start" < "$prev_end" ]] || fail "stage $stage (job $id) started $start, before the previous stage ended ($prev_end)"
    log "recipe stage $stage: job $id COMPLETED ($start -> $end)"
    prev_end=$end
  done
  last_log=$(awk '{print $3}' <<<"${RJOBS[7]}")
  grep -q "8/8 stages done" "$last_log" || fail "the last job's log does not end with the 8-stage table"
  grep -E '^(mine|decontaminate|preprocess|pretrain|sft|reward_model|rl|evaluate) ' "$last_log" | tail -n 8
  (cd "$REPO" && "$PYTHON" tools/recipe.py status --recipe examples/recipes/demo.yaml --output "$ROUT" "${SETS[@]}") \
    >"$WORK/log/recipe_status.log" 2>&1 || fail "recipe status failed"
  n_done=$(grep -cE '^(mine|decontaminate|preprocess|pretrain|sft|reward_model|rl|evaluate) +done ' "$WORK/log/recipe_status.log")
  (( n_done == 8 )) || { cat "$WORK/log/recipe_status.log"; fail "status shows $n_done of 8 stages done"; }
  "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); assert [s['name'] for s in d['stages']] == ['mine','decontaminate','preprocess','pretrain','sft','reward_model','rl','evaluate'] and all(s['ok'] for s in d['stages']), d" "$ROUT/summary.json" \
    || fail "summary.json does not hold the 8 stages, all ok"
  echo "PASS: the demo recipe ran as a chain of 8 sbatch jobs (afterok), each stage after the one before; status and summary.json show all 8 done"
fi
