# What every run shares: the registry scope, hooks, logging and the process environment.
default_scope = 'detkit'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    # detkit's LoggerHook: a line (iteration, loss, s/iter, ETA) every 50 iterations and at
    # least every 5 seconds; the scalars every 50 iterations
    logger=dict(type='LoggerHook', interval=50, interval_s=5.0),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # detkit's CheckpointHook: atomic writes, old checkpoints deleted only after a new one is saved
    checkpoint=dict(type='CheckpointHook', interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)

# Random generator states go into every checkpoint: --resume continues the same random draws.
custom_hooks = [dict(type='RNGStateHook')]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
