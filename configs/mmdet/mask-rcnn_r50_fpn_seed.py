# Profile `seed`: the seed report's schedule (Detectron2): SGD momentum 0.9, lr 0.00025, batch 4,
# 5000 iterations, 640-px images. It assumes COCO-pretrained weights (`--init`); from scratch it will not converge.
_base_ = './mask-rcnn_r50_fpn.py'
