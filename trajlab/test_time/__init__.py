"""Test-time search over trajectories: spend more inference on a question, pick better.

    trajlab test-time --model default --task arith --method vote --budgets 1,2,4,8
    trajlab test-time --samples runs/arith_n8 --method best_of_n --verifier judge

Every strategy works on trajectories of the one agent loop (trajlab.agent.loop) and the
one ledger (trajlab.types.Trajectory), so what it picks is token-exact, viewable and
trainable like any rollout. Modules:

- answers.py    which sampled answers are the same answer (math-verify, QA normalisation)
- select.py     the selection rules: majority vote, weighted vote, best-of-N
- verifiers.py  scores for the rules: a reward function, the policy's own confidence,
                a generative judge whose grading trajectories are stored
- orm.py        `trajlab orm`: an outcome reward model (a probe on the frozen model's
                hidden state) trained from scored samples, the `orm:DIR` verifier
- prm.py        `trajlab prm`: a process reward model (a value probe) trained on
                Monte-Carlo labels of turn prefixes, the `prm:DIR` verifier
- beam.py       verifier-guided beam search over turns (the `beam` method)
- run.py        `trajlab test-time`: samples through the evaluation harness, scores,
                selects at every budget and writes a run directory with the
                compute-accuracy curve (docs/search_methods.md)

Not here (yet): steps smaller than a turn, MCTS, DOTS, PlanGEN, Retro-Search.
This package is not the `search` tool (trajlab.tools.search), which retrieves passages.
"""
