# Profile `cpu`: Mask R-CNN from scratch in <= 60 min on 2 CPU cores (NEU-Seg, 200-px images).
# Why each change: GroupNorm everywhere because BN statistics are useless at batch 4 from scratch;
# R18 and a 128-channel FPN because an R50 step costs 5-7 s here; RoIAlign with 2x2 samples per bin because
# mmcv's CPU RoIAlign backward was a third of a step with adaptive sampling; fewer sampled RoIs and proposals because
# NEU-Seg images hold 1-5 defects, so 512 RoIs per image is mostly background compute; cosine decay so
# a short schedule still ends at a low learning rate; vertical flips because steel texture has no up/down.
_base_ = './mask-rcnn_r50_fpn.py'
image_size = 200
gn = dict(type='GN', num_groups=32, requires_grad=True)
fpn_ch = 128
# 2600 iterations: a step settles at ~1.24 s once the RPN proposes real positives (the first 50 take ~1.0 s),
# so the schedule ends in ~54 min on an idle 2-core machine.
max_iters = 2600

model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_cfg=gn, norm_eval=False, zero_init_residual=False),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=fpn_ch, norm_cfg=gn),
    rpn_head=dict(in_channels=fpn_ch, feat_channels=fpn_ch),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_ch, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=fpn_ch, fc_out_channels=1024),
        mask_roi_extractor=dict(out_channels=fpn_ch, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(in_channels=fpn_ch, conv_out_channels=fpn_ch, norm_cfg=gn)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128, pos_fraction=0.25))),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=300)))

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
optim_wrapper = dict(optimizer=dict(lr=0.02, momentum=0.9, weight_decay=0.0001), clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=300),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=300, end=max_iters, T_max=max_iters - 300, eta_min=0.0002),
]
