"""Options of the RL stage (GRPO and the unified-paradigm baselines).

One dataclass; ``training.arguments.parse_args(argv, extra=RLConfig)`` turns
it into flags (``--group-size``...) and reads the YAML section ``rl:``.
Defaults are the paper's GRPO recipe where the paper gives one (beta 0.04,
k3 KL in the loss, eps 0.2, per-sequence token mean, one policy update per
exploration stage); sizes default to the toy task.

``--algorithm`` names a registered algorithm (rl/algorithms.py; the paper's
unified paradigm, section 5.2, in rl/builtin_algorithms.py):

    algorithm=rft          data from the initial (SFT) model, GC = 1 on correct
    algorithm=online-rft   data from the live policy,         GC = 1 on correct
    algorithm=grpo supervision=outcome   GRPO+OS
    algorithm=grpo supervision=process   GRPO+PS
    algorithm=ppo          PPO with a critic (value head, GAE) - the memory reference
"""

from __future__ import annotations

from typing import ClassVar

from megatron_dsm.config import ConfigError, field, options
from megatron_dsm.models.engines import ENGINES
from megatron_dsm.rl.algorithms import AGG_MODES, KL_ESTIMATORS, algorithm_names, get_algorithm

REWARDS = ("rule", "pot", "orm", "prm", "mixed", "arith-steps")
LEARNED_REWARDS = ("orm", "prm", "mixed")


@options
class RLConfig:
    yaml_section: ClassVar[str] = "rl"

    algorithm: str = field("grpo", help="RL algorithm", choices=algorithm_names)
    supervision: str = field("outcome", help="GRPO advantage: outcome (OS) or process (PS)",
                             choices=("outcome", "process"))
    group_size: int = field(8, help="G: sampled outputs per question")
    prompts_per_step: int = field(8, help="B: questions per exploration stage (all data-parallel ranks)")
    max_new_tokens: int = field(48, help="max response length (tokens)")
    temperature: float = field(1.0, help="sampling temperature (rollouts and log-probs)")
    top_p: float = field(1.0, help="nucleus sampling")
    rollout_engine: str = field("auto", help="sampler: direct (module-free forward over the policy's "
                                "weights), megatron (GPTModel.forward + StaticInferenceContext), "
                                "vllm (colocated, refitted from the policy before each rollout), "
                                "auto (vllm on a GPU where installed, else direct for a CPU model "
                                "it supports, else megatron)", choices=ENGINES)
    rollout_batch: int | None = field(None, help="rows decoded at once per rank (direct/megatron: the "
                                      "rollout in chunks; vllm: max_num_seqs); default all")
    rollout_kv_cache_gib: float | None = field(None, help="KV-cache budget per rank, GiB: vLLM's KV "
                                               "cache; direct/megatron admit the rows it holds at once "
                                               "(default: vLLM 1 GiB on CPU, its memory share on a GPU; "
                                               "the other engines all rows)")
    vllm_tensor_parallel_size: int = field(1, help="vllm: its own TP size (divides or is a multiple "
                                           "of the training TP size)")
    vllm_gpu_memory_utilization: float = field(0.5, help="vllm on a GPU: its share of the GPU "
                                               "(weights + KV cache), beside the training state")
    offload_training_state: bool = field(False, help="gradient buffers and optimizer state off the "
                                         "accelerator during rollouts (training/offload.py)")
    tis_cap: float = field(0.0, help="truncated importance sampling: weight each token's policy loss "
                           "by min(pi_old / pi_sampler, cap) (0: off)")
    pack_prompts: bool = field(True, help="policy forward/backward with each distinct prompt of a "
                               "micro-batch run once (rl/packing.py; the row layout where the "
                               "model does not support it)")
    beta: float = field(0.04, help="KL coefficient (in the loss)")
    kl_estimator: str = field("k3", help="KL estimator", choices=KL_ESTIMATORS)
    eps_low: float = field(0.2, help="clip epsilon (low side)")
    eps_high: float | None = field(None, help="clip epsilon (high side; DAPO clip-higher; default eps_low)")
    loss_agg: str = field("seq-mean-token-mean", help="loss aggregation (paper / token mean / Dr. GRPO)",
                          choices=AGG_MODES)
    scale_rewards: bool = field(True, help="divide advantages by the group std (off: Dr. GRPO)")
    inner_updates: int = field(1, help="mu: policy updates per exploration stage")
    dynamic_sampling: bool = field(False, help="drop groups whose rewards are all equal (DAPO)")
    overlong_buffer: int = field(0, help="DAPO soft overlong penalty length (0: off)")
    reward: str = field("rule", help="reward source: rule (grader), pot (program run in the sandbox), "
                        "orm / prm (learned outcome / process reward model, --reward-model), mixed "
                        "(rule + --rm-weight x outcome RM probability), arith-steps (toy task's "
                        "rule-checked steps)", choices=REWARDS)
    reward_correct: float = field(1.0, help="rule reward for a correct answer")
    reward_wrong: float = field(0.0, help="rule reward for a wrong answer (e.g. -1)")
    format_penalty: float = field(0.0, help="subtracted when no final answer is found")
    reward_model: str | None = field(None, help="reward-model checkpoint (reward=orm/prm/mixed)")
    rm_weight: float = field(0.5, help="mixed: weight of the outcome RM's probability added to the rule reward")
    offload_reward_model: bool = field(False, help="keep the reward model's weights in host memory "
                                       "between scoring passes (a frozen reward model)")
    rl_iteration_steps: int = field(0, help="steps per RL iteration: reference <- policy (and RM update) after each; 0: one iteration")
    rm_update_iters: int = field(0, help="iterative RL: reward-model training steps after each RL iteration")
    rm_replay: float = field(0.1, help="iterative RL: share of old RM data replayed")
    rm_recipe: str | None = field(None, help="iterative RL: the reward model's training recipe (YAML "
                                  "with a train: section, as tools/train_reward_model.py reads: lr, "
                                  "batch, optimizer); default the paper's (lr 2e-5, constant)")
    rm_replay_data: list[str] = field(default_factory=list, help="iterative RL: the reward model's "
                                      "original training data (jsonl), replayed with the refreshes' data")
    rm_refresh_questions: int = field(0, help="iterative RL: questions sampled from the policy per "
                                      "refresh, group_size samples each (0: prompts_per_step)")
    rm_shepherd_samples: int = field(4, help="iterative RL, process RM: completions per step prefix "
                                     "(Math-Shepherd labels)")
    rm_label_mode: str = field("hard", help="iterative RL, process RM: Math-Shepherd hard or soft labels",
                               choices=("hard", "soft"))
    offload_reference: bool = field(False, help="keep the reference model on CPU between uses")
    vf_coef: float = field(0.5, help="PPO: value-loss weight (critic has its own optimizer)")
    gae_lambda: float = field(0.95, help="PPO: GAE lambda")
    gae_gamma: float = field(1.0, help="PPO: discount")
    # data
    task: str = field("arith", help="'arith' (generated word problems) or a jsonl of {question, answer}")
    heldout_task: str | None = field(None, help="held-out jsonl (task=arith: generated split)")
    task_train_size: int = field(2000, help="arith: training problems")
    task_heldout_size: int = field(200, help="arith: held-out problems")
    task_max_value: int = field(20, help="arith: largest starting number / operand")
    task_two_step_prob: float = field(0.5, help="arith: share of two-operation problems")
    task_seed: int = field(0, help="arith: generator seed")
    tokenizer_type: str = field("byte", help="tokenizer kind (byte, hf, sentencepiece, auto)")
    tokenizer_model: str | None = field(None, help="tokenizer path")
    rl_eval_interval: int = field(0, help="steps between greedy held-out evaluations (0: start and end only)")
    rl_eval_size: int = field(200, help="held-out questions per evaluation")

    def __post_init__(self):
        for name in ("group_size", "prompts_per_step", "max_new_tokens", "inner_updates"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rl: {name} must be >= 1, got {getattr(self, name)}")
        get_algorithm(self.algorithm).check_config(self)
        if self.temperature <= 0:
            raise ConfigError(f"rl: temperature must be > 0 for sampling, got {self.temperature}")
        if self.beta < 0:
            raise ConfigError(f"rl: beta must be >= 0, got {self.beta}")
        if self.supervision == "process" and self.reward not in ("prm", "arith-steps"):
            raise ConfigError("rl: process supervision needs step rewards: --reward prm or arith-steps")
        if self.reward in LEARNED_REWARDS and not self.reward_model:
            raise ConfigError(f"rl: --reward {self.reward} needs --reward-model CHECKPOINT")
        if self.rm_update_iters < 0:
            raise ConfigError(f"rl: rm_update_iters must be >= 0, got {self.rm_update_iters}")
        if self.rm_update_iters and self.reward not in LEARNED_REWARDS:
            raise ConfigError("rl: iterative RM updates (--rm-update-iters) need a learned reward "
                              f"(--reward {', '.join(LEARNED_REWARDS)}), got --reward {self.reward}")
        if self.rm_update_iters and not self.rl_iteration_steps:
            raise ConfigError("rl: iterative RM updates (--rm-update-iters) happen between RL "
                              "iterations: set --rl-iteration-steps")
        if self.rm_update_iters and self.offload_reward_model:
            raise ConfigError("rl: --offload-reward-model keeps a frozen reward model off the "
                              "accelerator; with --rm-update-iters the reward model trains in process")
        self._check_rollout()
        if not 0.0 <= self.rm_replay < 1.0:
            raise ConfigError(f"rl: rm_replay must be in [0, 1), got {self.rm_replay}")
        if self.rm_shepherd_samples < 1 or self.rm_refresh_questions < 0:
            raise ConfigError("rl: rm_shepherd_samples must be >= 1 and rm_refresh_questions >= 0")

    def _check_rollout(self) -> None:
        if self.rollout_batch is not None and self.rollout_batch < 1:
            raise ConfigError(f"rl: rollout_batch must be >= 1, got {self.rollout_batch}")
        if self.rollout_kv_cache_gib is not None and self.rollout_kv_cache_gib <= 0:
            raise ConfigError(f"rl: rollout_kv_cache_gib must be > 0, got {self.rollout_kv_cache_gib}")
        if self.vllm_tensor_parallel_size < 1:
            raise ConfigError(f"rl: vllm_tensor_parallel_size must be >= 1, got "
                              f"{self.vllm_tensor_parallel_size}")
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            raise ConfigError(f"rl: vllm_gpu_memory_utilization must be in (0, 1], got "
                              f"{self.vllm_gpu_memory_utilization}")
        if self.tis_cap < 0:
            raise ConfigError(f"rl: tis_cap must be >= 0 (0: off), got {self.tis_cap}")
        if self.tis_cap and not get_algorithm(self.algorithm).per_token_advantages:
            raise ConfigError(f"rl: tis_cap weights per-token advantages; {self.algorithm} has a "
                              "per-sample coefficient")

    # Layout rules of the RL loop, here so that the loop (rl/run.py,
    # rl/loop.py) and the planner (tools/plan.py) check the same thing.
    def check_global_batch(self, global_batch_size: int) -> None:
        """One optimizer step trains on every response of the step: B x G."""
        want = self.prompts_per_step * self.group_size
        if global_batch_size != want:
            raise ConfigError(f"global batch size {global_batch_size} must equal B x G = "
                              f"{self.prompts_per_step} x {self.group_size} = {want} (responses per step)")

    def check_pipeline(self, pp: int) -> None:
        """Rollouts and the reference pass run the policy in process, whole."""
        if pp != 1:
            raise ConfigError(f"in-process rollouts need --pipeline-model-parallel-size 1, got {pp}")

    def rows_per_rank(self, dp: int, micro_batch_size: int) -> int:
        """Responses each data-parallel rank samples and trains on (B/DP x G)."""
        if self.prompts_per_step % dp:
            raise ConfigError(f"prompts_per_step {self.prompts_per_step} is not divisible by the "
                              f"data-parallel size {dp}")
        rows = self.prompts_per_step // dp * self.group_size
        if rows % micro_batch_size:
            raise ConfigError(f"{rows} responses per rank (B/DP x G) is not divisible "
                              f"by micro_batch_size {micro_batch_size}")
        return rows
