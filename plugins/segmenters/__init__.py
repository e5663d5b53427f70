"""Built-in segmenters, registered through the `harness` entry-point group like any third-party plugin."""
from harness.hookspecs import hookimpl


@hookimpl
def harness_register_segmenters(register):
    # Imported here so that listing plugins does not pay for importing torch and mmdet.
    from plugins.segmenters.mmdet_mask_rcnn import MMDetMaskRCNN
    from plugins.segmenters.tv_mask_rcnn import TVMaskRCNN

    register(MMDetMaskRCNN)
    register(TVMaskRCNN)
