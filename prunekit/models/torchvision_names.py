"""The torchvision classifiers the zoo offers, with their input size, as a static table.

Kept static so that ``import prunekit.models`` lists them without importing torchvision (which
costs seconds); torchvision is imported when one of them is built. A test checks the table
against ``torchvision.models.list_models`` and the crop size of each model's DEFAULT weights
(ViT and MaxViT: 224, the size they are built for without weights).
"""

from __future__ import annotations

__all__ = ["INPUT_SIZES"]

_AT_224 = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121",
    "densenet161", "densenet169", "densenet201", "efficientnet_b0", "googlenet", "maxvit_t",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large",
    "mobilenet_v3_small", "regnet_x_16gf", "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf",
    "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf", "regnet_y_16gf", "regnet_y_1_6gf",
    "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_8gf",
    "resnet101", "resnet152", "resnet18", "resnet34", "resnet50", "resnext101_32x8d",
    "resnext101_64x4d", "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1", "swin_b",
    "swin_s", "swin_t", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2",
    "wide_resnet50_2",
)
_OTHER_SIZES = {
    "efficientnet_b1": 240, "efficientnet_b2": 288, "efficientnet_b3": 300, "efficientnet_b4": 380,
    "efficientnet_b5": 456, "efficientnet_b6": 528, "efficientnet_b7": 600,
    "efficientnet_v2_s": 384, "efficientnet_v2_m": 480, "efficientnet_v2_l": 480,
    "inception_v3": 299, "regnet_y_128gf": 384, "swin_v2_b": 256, "swin_v2_s": 256, "swin_v2_t": 256,
}

INPUT_SIZES: dict[str, int] = {**dict.fromkeys(_AT_224, 224), **_OTHER_SIZES}
"""torchvision model name -> the height = width of the images it is meant for."""
