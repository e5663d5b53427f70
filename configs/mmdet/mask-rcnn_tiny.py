# Profile `tiny`: a ~4-minute Mask R-CNN (0.25 s per step) for the embedded synthetic demo and the tests.
# Same architecture family as `cpu` (ResNet-18 layout, GroupNorm, FPN) at a quarter of the width and 128-px input.
_base_ = './mask-rcnn_r18_fpn_gn_cpu.py'
image_size = 128
gn = dict(type='GN', num_groups=8, requires_grad=True)
fpn_ch = 64
max_iters = 1000

model = dict(
    backbone=dict(base_channels=16, norm_cfg=gn),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=fpn_ch, norm_cfg=gn),
    rpn_head=dict(in_channels=fpn_ch, feat_channels=fpn_ch),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_ch),
        bbox_head=dict(in_channels=fpn_ch, fc_out_channels=256),
        mask_roi_extractor=dict(out_channels=fpn_ch),
        mask_head=dict(num_convs=2, in_channels=fpn_ch, conv_out_channels=fpn_ch, norm_cfg=gn)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=200)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=[0.25, 0.25, 0.25], direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.02))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters, T_max=max_iters - 100, eta_min=0.0002),
]
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=100))
