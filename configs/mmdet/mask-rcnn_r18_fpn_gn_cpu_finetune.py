# Fine-tuning a trained `cpu` model (the training-side baselines of neu-seg-baselines-cpu.yaml): the `cpu`
# profile's model and pipeline, 500 iterations from a tenth of its peak learning rate down to its floor, no
# warm-up. Restarting the profile's own schedule (warm-up to lr 0.02) from the converged model cost the plain
# model 1-2 AP by itself (the `tuned-clean` control of the first run), which would hide what the
# augmented or adapted training data change.
_base_ = './mask-rcnn_r18_fpn_gn_cpu.py'
max_iters = 500
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.002))
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, T_max=max_iters, eta_min=0.0002),
]
