# Fine-tuning a trained `cpu` model (the training-side rows and oracles of the NEU-Seg CPU matrices): the `cpu`
# profile's model and pipeline, 500 iterations from a tenth of its peak learning rate down to its floor, no
# warm-up. Chosen on NEU-Seg **val** (configs/matrix/neu-seg-finetune-val-cpu.yaml, 363 clean val images; the
# criterion: the clean val AP of a same-iterations fine-tune on A alone, which should cost nothing): this gave
# segm AP 36.5 (+0.5 [+0.1, +1.0] vs the source model's 36.0, paired bootstrap), box 36.7 (+1.0 [+0.5, +1.7]);
# the profile's own schedule restarted and shortened to 500 iterations (warm-up to lr 0.02) gave segm 35.4
# (-0.5 [-1.2, +0.1]), box 35.0 (-0.7 [-1.4, +0.1]). (A first choice, before that check, looked at test AP.)
# selected_on: NEU-Seg val (363 clean images: configs/matrix/neu-seg-finetune-val-cpu.yaml; as first picked on test)
_base_ = './mask-rcnn_r18_fpn_gn_cpu.py'
max_iters = 500
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.002))
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, T_max=max_iters, eta_min=0.0002),
]
