# Sourced by the training batches (pretrain_, sft_, grpo_dsm.sbatch) after
# they cd to the repository: the checks and the rendezvous they share.
#
#   dsm_slurm_setup          refuse to run outside an allocation; export
#                            NNODES, MASTER_ADDR, MASTER_PORT, OMP_NUM_THREADS,
#                            CUDA_DEVICE_MAX_CONNECTIONS; fill the array SRUN
#                            (srun, plus pyxis options when CONTAINER_IMAGE is set)
#   dsm_run_per_node NAME SCRIPT ARGS...
#                            one Slurm task per node runs `bash SCRIPT ARGS...`,
#                            whose torchrun starts NPROC ranks (NPROC, else the
#                            GPUs Slurm gave the node, else 1); with DRY_RUN
#                            set, SCRIPT runs once here and prints its plan

dsm_slurm_setup() {
  [[ -n "${SLURM_JOB_ID:-}" ]] || { echo "error: not inside a Slurm allocation: submit with sbatch" >&2; exit 2; }
  export NNODES=${SLURM_NNODES:-1}
  export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
  # A port derived from the job id: two jobs sharing a node do not collide.
  export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
  SRUN=(srun --kill-on-bad-exit=1 --label)
  if [[ -n "${CONTAINER_IMAGE:-}" ]]; then
    SRUN+=(--container-image="$CONTAINER_IMAGE" --container-mounts="$REPO:$REPO" --container-workdir="$REPO")
  fi
}

dsm_run_per_node() {
  local name=$1 script=$2
  shift 2
  [[ -f "$script" ]] || { echo "error: $REPO/$script is missing (submit from the repository root or set DSM_REPO)" >&2; exit 2; }
  if [[ -z "${NPROC:-}" ]]; then
    if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then NPROC=$SLURM_GPUS_ON_NODE
    elif [[ -n "${SLURM_GPUS_PER_NODE:-}" ]]; then NPROC=${SLURM_GPUS_PER_NODE##*:}
    else NPROC=1; fi
  fi
  export NPROC
  echo "$name: job $SLURM_JOB_ID, $NNODES node(s) x $NPROC rank(s), master $MASTER_ADDR:$MASTER_PORT"
  if [[ -n "${DRY_RUN:-}" ]]; then
    exec bash "$script" "$@"      # the script prints the planner's report; no srun
  fi
  "${SRUN[@]}" --ntasks="$NNODES" --ntasks-per-node=1 bash -c '
    export NNODES=$SLURM_NNODES NODE_RANK=$SLURM_NODEID
    exec bash "$0" "$@"' "$script" "$@"
}
