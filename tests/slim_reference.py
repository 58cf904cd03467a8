"""TF-Slim variable names and shapes, written from slim's network definitions
(tensorflow/models research/slim/nets) independently of our importer: each function follows
slim's layer calls, tracking channels, and records what `slim.conv2d` (weights + BatchNorm
beta / moving_mean / moving_variance) and `slim.fully_connected` (weights + biases) create."""

import numpy as np


class Net:
    def __init__(self, scope):
        self.scope, self.vars = scope, {}

    def conv(self, path, cin, cout, kh, kw=None):
        kw = kh if kw is None else kw
        p = f"{self.scope}/{path}"
        self.vars[f"{p}/weights"] = (kh, kw, cin, cout)
        for stat in ("beta", "moving_mean", "moving_variance"):
            self.vars[f"{p}/BatchNorm/{stat}"] = (cout,)
        return cout

    def linear(self, path, cin, cout, conv=False):
        p = f"{self.scope}/{path}"
        self.vars[f"{p}/weights"] = (1, 1, cin, cout) if conv else (cin, cout)
        self.vars[f"{p}/biases"] = (cout,)

    def proj(self, path, cin, cout):  # residual up-projection: conv with biases, no BN
        self.vars[f"{self.scope}/{path}/Conv2d_1x1/weights"] = (1, 1, cin, cout)
        self.vars[f"{self.scope}/{path}/Conv2d_1x1/biases"] = (cout,)


def inception_v3(classes=1001):
    n = Net("InceptionV3")
    c = n.conv("Conv2d_1a_3x3", 3, 32, 3)
    c = n.conv("Conv2d_2a_3x3", c, 32, 3)
    c = n.conv("Conv2d_2b_3x3", c, 64, 3)
    c = n.conv("Conv2d_3b_1x1", c, 80, 1)
    c = n.conv("Conv2d_4a_3x3", c, 192, 3)
    for m, pool in (("5b", 32), ("5c", 64), ("5d", 64)):
        b1 = ("Conv2d_0b_1x1", "Conv_1_0c_5x5") if m == "5c" else ("Conv2d_0a_1x1", "Conv2d_0b_5x5")
        out = n.conv(f"Mixed_{m}/Branch_0/Conv2d_0a_1x1", c, 64, 1)
        out += n.conv(f"Mixed_{m}/Branch_1/{b1[1]}", n.conv(f"Mixed_{m}/Branch_1/{b1[0]}", c, 48, 1), 64, 5)
        t = n.conv(f"Mixed_{m}/Branch_2/Conv2d_0a_1x1", c, 64, 1)
        t = n.conv(f"Mixed_{m}/Branch_2/Conv2d_0b_3x3", t, 96, 3)
        out += n.conv(f"Mixed_{m}/Branch_2/Conv2d_0c_3x3", t, 96, 3)
        c = out + n.conv(f"Mixed_{m}/Branch_3/Conv2d_0b_1x1", c, pool, 1)
    out = n.conv("Mixed_6a/Branch_0/Conv2d_1a_1x1", c, 384, 3)
    t = n.conv("Mixed_6a/Branch_1/Conv2d_0b_3x3", n.conv("Mixed_6a/Branch_1/Conv2d_0a_1x1", c, 64, 1), 96, 3)
    c = out + n.conv("Mixed_6a/Branch_1/Conv2d_1a_1x1", t, 96, 3) + c
    for m, c7 in (("6b", 128), ("6c", 160), ("6d", 160), ("6e", 192)):
        out = n.conv(f"Mixed_{m}/Branch_0/Conv2d_0a_1x1", c, 192, 1)
        t = n.conv(f"Mixed_{m}/Branch_1/Conv2d_0a_1x1", c, c7, 1)
        t = n.conv(f"Mixed_{m}/Branch_1/Conv2d_0b_1x7", t, c7, 1, 7)
        out += n.conv(f"Mixed_{m}/Branch_1/Conv2d_0c_7x1", t, 192, 7, 1)
        t = n.conv(f"Mixed_{m}/Branch_2/Conv2d_0a_1x1", c, c7, 1)
        t = n.conv(f"Mixed_{m}/Branch_2/Conv2d_0b_7x1", t, c7, 7, 1)
        t = n.conv(f"Mixed_{m}/Branch_2/Conv2d_0c_1x7", t, c7, 1, 7)
        t = n.conv(f"Mixed_{m}/Branch_2/Conv2d_0d_7x1", t, c7, 7, 1)
        out += n.conv(f"Mixed_{m}/Branch_2/Conv2d_0e_1x7", t, 192, 1, 7)
        c = out + n.conv(f"Mixed_{m}/Branch_3/Conv2d_0b_1x1", c, 192, 1)
    aux = n.conv("AuxLogits/Conv2d_2a_5x5", n.conv("AuxLogits/Conv2d_1b_1x1", c, 128, 1), 768, 5)
    n.linear("AuxLogits/Conv2d_2b_1x1", aux, classes, conv=True)
    out = n.conv("Mixed_7a/Branch_0/Conv2d_1a_3x3", n.conv("Mixed_7a/Branch_0/Conv2d_0a_1x1", c, 192, 1), 320, 3)
    t = n.conv("Mixed_7a/Branch_1/Conv2d_0a_1x1", c, 192, 1)
    t = n.conv("Mixed_7a/Branch_1/Conv2d_0b_1x7", t, 192, 1, 7)
    t = n.conv("Mixed_7a/Branch_1/Conv2d_0c_7x1", t, 192, 7, 1)
    c = out + n.conv("Mixed_7a/Branch_1/Conv2d_1a_3x3", t, 192, 3) + c
    for m, second in (("7b", "Conv2d_0b_3x1"), ("7c", "Conv2d_0c_3x1")):
        out = n.conv(f"Mixed_{m}/Branch_0/Conv2d_0a_1x1", c, 320, 1)
        t = n.conv(f"Mixed_{m}/Branch_1/Conv2d_0a_1x1", c, 384, 1)
        out += n.conv(f"Mixed_{m}/Branch_1/Conv2d_0b_1x3", t, 384, 1, 3)
        out += n.conv(f"Mixed_{m}/Branch_1/{second}", t, 384, 3, 1)
        t = n.conv(f"Mixed_{m}/Branch_2/Conv2d_0b_3x3", n.conv(f"Mixed_{m}/Branch_2/Conv2d_0a_1x1", c, 448, 1), 384, 3)
        out += n.conv(f"Mixed_{m}/Branch_2/Conv2d_0c_1x3", t, 384, 1, 3)
        out += n.conv(f"Mixed_{m}/Branch_2/Conv2d_0d_3x1", t, 384, 3, 1)
        c = out + n.conv(f"Mixed_{m}/Branch_3/Conv2d_0b_1x1", c, 192, 1)
    n.linear("Logits/Conv2d_1c_1x1", c, classes, conv=True)
    return n.vars


def inception_v4(classes=1001):
    n = Net("InceptionV4")
    c = n.conv("Conv2d_2b_3x3", n.conv("Conv2d_2a_3x3", n.conv("Conv2d_1a_3x3", 3, 32, 3), 32, 3), 64, 3)
    c = c + n.conv("Mixed_3a/Branch_1/Conv2d_0a_3x3", c, 96, 3)
    out = n.conv("Mixed_4a/Branch_0/Conv2d_1a_3x3", n.conv("Mixed_4a/Branch_0/Conv2d_0a_1x1", c, 64, 1), 96, 3)
    t = n.conv("Mixed_4a/Branch_1/Conv2d_0a_1x1", c, 64, 1)
    t = n.conv("Mixed_4a/Branch_1/Conv2d_0b_1x7", t, 64, 1, 7)
    t = n.conv("Mixed_4a/Branch_1/Conv2d_0c_7x1", t, 64, 7, 1)
    c = out + n.conv("Mixed_4a/Branch_1/Conv2d_1a_3x3", t, 96, 3)
    c = n.conv("Mixed_5a/Branch_0/Conv2d_1a_3x3", c, 192, 3) + c
    for m in "bcde":
        s = f"Mixed_5{m}"
        out = n.conv(f"{s}/Branch_0/Conv2d_0a_1x1", c, 96, 1)
        out += n.conv(f"{s}/Branch_1/Conv2d_0b_3x3", n.conv(f"{s}/Branch_1/Conv2d_0a_1x1", c, 64, 1), 96, 3)
        t = n.conv(f"{s}/Branch_2/Conv2d_0b_3x3", n.conv(f"{s}/Branch_2/Conv2d_0a_1x1", c, 64, 1), 96, 3)
        out += n.conv(f"{s}/Branch_2/Conv2d_0c_3x3", t, 96, 3)
        c = out + n.conv(f"{s}/Branch_3/Conv2d_0b_1x1", c, 96, 1)
    out = n.conv("Mixed_6a/Branch_0/Conv2d_1a_3x3", c, 384, 3)
    t = n.conv("Mixed_6a/Branch_1/Conv2d_0b_3x3", n.conv("Mixed_6a/Branch_1/Conv2d_0a_1x1", c, 192, 1), 224, 3)
    c = out + n.conv("Mixed_6a/Branch_1/Conv2d_1a_3x3", t, 256, 3) + c
    for m in "bcdefgh":
        s = f"Mixed_6{m}"
        out = n.conv(f"{s}/Branch_0/Conv2d_0a_1x1", c, 384, 1)
        t = n.conv(f"{s}/Branch_1/Conv2d_0b_1x7", n.conv(f"{s}/Branch_1/Conv2d_0a_1x1", c, 192, 1), 224, 1, 7)
        out += n.conv(f"{s}/Branch_1/Conv2d_0c_7x1", t, 256, 7, 1)
        t = n.conv(f"{s}/Branch_2/Conv2d_0b_7x1", n.conv(f"{s}/Branch_2/Conv2d_0a_1x1", c, 192, 1), 192, 7, 1)
        t = n.conv(f"{s}/Branch_2/Conv2d_0c_1x7", t, 224, 1, 7)
        t = n.conv(f"{s}/Branch_2/Conv2d_0d_7x1", t, 224, 7, 1)
        out += n.conv(f"{s}/Branch_2/Conv2d_0e_1x7", t, 256, 1, 7)
        c = out + n.conv(f"{s}/Branch_3/Conv2d_0b_1x1", c, 128, 1)
    aux = n.conv("AuxLogits/Conv2d_2a", n.conv("AuxLogits/Conv2d_1b_1x1", c, 128, 1), 768, 5)
    n.linear("AuxLogits/Aux_logits", aux, classes)
    out = n.conv("Mixed_7a/Branch_0/Conv2d_1a_3x3", n.conv("Mixed_7a/Branch_0/Conv2d_0a_1x1", c, 192, 1), 192, 3)
    t = n.conv("Mixed_7a/Branch_1/Conv2d_0b_1x7", n.conv("Mixed_7a/Branch_1/Conv2d_0a_1x1", c, 256, 1), 256, 1, 7)
    t = n.conv("Mixed_7a/Branch_1/Conv2d_0c_7x1", t, 320, 7, 1)
    c = out + n.conv("Mixed_7a/Branch_1/Conv2d_1a_3x3", t, 320, 3) + c
    for m in "bcd":
        s = f"Mixed_7{m}"
        out = n.conv(f"{s}/Branch_0/Conv2d_0a_1x1", c, 256, 1)
        t = n.conv(f"{s}/Branch_1/Conv2d_0a_1x1", c, 384, 1)
        out += n.conv(f"{s}/Branch_1/Conv2d_0b_1x3", t, 256, 1, 3) + n.conv(f"{s}/Branch_1/Conv2d_0c_3x1", t, 256, 3, 1)
        t = n.conv(f"{s}/Branch_2/Conv2d_0b_3x1", n.conv(f"{s}/Branch_2/Conv2d_0a_1x1", c, 384, 1), 448, 3, 1)
        t = n.conv(f"{s}/Branch_2/Conv2d_0c_1x3", t, 512, 1, 3)
        out += n.conv(f"{s}/Branch_2/Conv2d_0d_1x3", t, 256, 1, 3) + n.conv(f"{s}/Branch_2/Conv2d_0e_3x1", t, 256, 3, 1)
        c = out + n.conv(f"{s}/Branch_3/Conv2d_0b_1x1", c, 256, 1)
    n.linear("Logits/Logits", c, classes)
    return n.vars


def inception_resnet_v2(classes=1001):
    n = Net("InceptionResnetV2")
    c = n.conv("Conv2d_2b_3x3", n.conv("Conv2d_2a_3x3", n.conv("Conv2d_1a_3x3", 3, 32, 3), 32, 3), 64, 3)
    c = n.conv("Conv2d_4a_3x3", n.conv("Conv2d_3b_1x1", c, 80, 1), 192, 3)
    out = n.conv("Mixed_5b/Branch_0/Conv2d_1x1", c, 96, 1)
    out += n.conv("Mixed_5b/Branch_1/Conv2d_0b_5x5", n.conv("Mixed_5b/Branch_1/Conv2d_0a_1x1", c, 48, 1), 64, 5)
    t = n.conv("Mixed_5b/Branch_2/Conv2d_0b_3x3", n.conv("Mixed_5b/Branch_2/Conv2d_0a_1x1", c, 64, 1), 96, 3)
    out += n.conv("Mixed_5b/Branch_2/Conv2d_0c_3x3", t, 96, 3)
    c = out + n.conv("Mixed_5b/Branch_3/Conv2d_0b_1x1", c, 64, 1)
    for i in range(1, 11):
        s = f"Repeat/block35_{i}"
        out = n.conv(f"{s}/Branch_0/Conv2d_1x1", c, 32, 1)
        out += n.conv(f"{s}/Branch_1/Conv2d_0b_3x3", n.conv(f"{s}/Branch_1/Conv2d_0a_1x1", c, 32, 1), 32, 3)
        t = n.conv(f"{s}/Branch_2/Conv2d_0b_3x3", n.conv(f"{s}/Branch_2/Conv2d_0a_1x1", c, 32, 1), 48, 3)
        out += n.conv(f"{s}/Branch_2/Conv2d_0c_3x3", t, 64, 3)
        n.proj(s, out, c)
    out = n.conv("Mixed_6a/Branch_0/Conv2d_1a_3x3", c, 384, 3)
    t = n.conv("Mixed_6a/Branch_1/Conv2d_0b_3x3", n.conv("Mixed_6a/Branch_1/Conv2d_0a_1x1", c, 256, 1), 256, 3)
    c = out + n.conv("Mixed_6a/Branch_1/Conv2d_1a_3x3", t, 384, 3) + c
    for i in range(1, 21):
        s = f"Repeat_1/block17_{i}"
        out = n.conv(f"{s}/Branch_0/Conv2d_1x1", c, 192, 1)
        t = n.conv(f"{s}/Branch_1/Conv2d_0b_1x7", n.conv(f"{s}/Branch_1/Conv2d_0a_1x1", c, 128, 1), 160, 1, 7)
        out += n.conv(f"{s}/Branch_1/Conv2d_0c_7x1", t, 192, 7, 1)
        n.proj(s, out, c)
    aux = n.conv("AuxLogits/Conv2d_2a_5x5", n.conv("AuxLogits/Conv2d_1b_1x1", c, 128, 1), 768, 5)
    n.linear("AuxLogits/Logits", aux, classes)
    out = n.conv("Mixed_7a/Branch_0/Conv2d_1a_3x3", n.conv("Mixed_7a/Branch_0/Conv2d_0a_1x1", c, 256, 1), 384, 3)
    out += n.conv("Mixed_7a/Branch_1/Conv2d_1a_3x3", n.conv("Mixed_7a/Branch_1/Conv2d_0a_1x1", c, 256, 1), 288, 3)
    t = n.conv("Mixed_7a/Branch_2/Conv2d_0b_3x3", n.conv("Mixed_7a/Branch_2/Conv2d_0a_1x1", c, 256, 1), 288, 3)
    c = out + n.conv("Mixed_7a/Branch_2/Conv2d_1a_3x3", t, 320, 3) + c
    for s in [f"Repeat_2/block8_{i}" for i in range(1, 10)] + ["Block8"]:
        out = n.conv(f"{s}/Branch_0/Conv2d_1x1", c, 192, 1)
        t = n.conv(f"{s}/Branch_1/Conv2d_0b_1x3", n.conv(f"{s}/Branch_1/Conv2d_0a_1x1", c, 192, 1), 224, 1, 3)
        out += n.conv(f"{s}/Branch_1/Conv2d_0c_3x1", t, 256, 3, 1)
        n.proj(s, out, c)
    c = n.conv("Conv2d_7b_1x1", c, 1536, 1)
    n.linear("Logits/Logits", c, classes)
    return n.vars


NETWORKS = {"inception_v3": inception_v3, "inception_v4": inception_v4,
            "inception_resnet_v2": inception_resnet_v2}


def trainable_count(shapes):
    """Parameters slim trains (moving statistics excluded)."""
    return sum(int(np.prod(s)) for k, s in shapes.items() if "moving_" not in k)
