"""PyTorch "twins" of pysbnn's networks, for speed comparisons only.

PyTorch is never a pysbnn dependency. This module imports ``torch`` only
inside its functions, so ``import _torch_twins`` works without it; call
:func:`available` first and skip the PyTorch column when it returns False::

    import _torch_twins as tt                 # benchmarks/ is on sys.path
    if tt.available():
        net = tt.resnet18_float32(width=16)
        seconds = tt.time_inference(net, images_uint8, threads=1)
        step = tt.train_step_fn(tt.binary_resnet18_train(8), images_uint8, labels, threads=1)
        # ... interleave ``step`` with pysbnn's step in _timing.interleaved_medians

The twins copy pysbnn's *shapes* and *topology*, not its weights: they exist
to time the same amount of work in PyTorch.

- :func:`mlp_float32` -- inference twin of ``pysbnn.binary_mlp``: ``Normalize
  -> [Linear -> BatchNorm1d] * L`` with ``Hardtanh`` (the float analogue of the
  ``sign`` between binary layers) in between; plain float32 weights.
- :func:`resnet18_float32` -- float32 network of the shapes of
  ``pysbnn.resnet.resnet18`` (IR-Net blocks: each 3x3 conv has its own
  residual; 1x1 conv + BN shortcut where the shape changes).
- :func:`binary_resnet18_train` -- training twin of the binarized ResNet-18:
  sign of weights and activations with the clipped-identity STE, learned
  scalar tau/phi per binary conv (``w = tau sign(w~) + phi``), BatchNorm.
- :func:`binary_mlp_train`, :func:`mlp_train` -- the MLP training twins of
  ``bench_train.torch_setup`` (784-512-512-10, float input, no Normalize).

Every image network starts with :class:`Normalize` (built by ``_modules``),
so it takes the same raw uint8 images as the pysbnn model: (n, h, w) grey or
(n, h, w, c) NHWC; it converts them to NCHW float32 (``channels_last``
memory format on request).

Timing: :func:`inference_fn` / :func:`train_step_fn` return zero-argument
callables to interleave with pysbnn's in ``_timing.interleaved_medians``;
:func:`time_inference` / :func:`time_train_step` time one of them alone
(median seconds per call, i.e. per batch).
"""

import statistics
import time

#: pixel statistics pysbnn's models use by default (/255).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
#: BasicBlocks per stage of ResNet-18 (as pysbnn.resnet.BLOCKS).
BLOCKS = (2, 2, 2, 2)
#: Smallest width trained in channels_last. Below it the 1x1 stride-2 shortcut
#: conv's NHWC weight gradient in oneDNN (PyTorch's CPU conv) has fewer input
#: channels than the ISA's block (8 with AVX2, 16 with AVX-512) and is wrong,
#: segfaults, aborts (heap corruption) or hangs: oneDNN issue #6035, seen here
#: with PyTorch 2.13.0 on AVX2 at widths 2, 4 and 6. NCHW is not affected.
CHANNELS_LAST_MIN_TRAIN_WIDTH = 16

_CACHE = {}


def available():
    """True if ``import torch`` works (PyTorch is optional, never a dependency)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _modules():
    """The torch module classes, defined on first use (so torch is imported lazily)."""
    if "m" in _CACHE:
        return _CACHE["m"]
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Normalize(nn.Module):
        """Raw images -> ``(x / 255 - mean) / std`` in float32 (float64 stays), NCHW or flat.

        (n, h, w) gains a channel axis, (n, h, w, c) is permuted to NCHW, as
        pysbnn's Normalize takes the same arrays. ``flatten`` gives (n, c h w)
        (for one channel, the same order as pysbnn's NHWC flatten).
        """

        def __init__(self, mean, std, flatten=False, channels_last=False):
            super().__init__()
            mean = torch.tensor(mean, dtype=torch.float64).reshape(1, -1, 1, 1)
            std = torch.tensor(std, dtype=torch.float64).reshape(1, -1, 1, 1)
            # out = x * scale + shift, one fused addcmul
            self.register_buffer("scale", (1.0 / (255.0 * std)).to(torch.float32))
            self.register_buffer("shift", (-mean / std).to(torch.float32))
            self.channels = mean.shape[1]
            self.flatten, self.channels_last = flatten, channels_last

        def forward(self, x):
            if x.dim() == 3:
                x = x.unsqueeze(1)
            elif x.dim() == 4 and x.shape[-1] == self.channels and x.shape[1] != self.channels:
                x = x.permute(0, 3, 1, 2)
            if x.dtype not in (torch.float32, torch.float64):     # float64 stays, as pysbnn
                x = x.to(torch.float32)
            scale, shift = self.scale, self.shift
            if scale.dtype != x.dtype:
                scale, shift = scale.to(x.dtype), shift.to(x.dtype)
            x = torch.addcmul(shift, x, scale)
            if self.flatten:
                return x.reshape(x.shape[0], -1)
            return x.contiguous(memory_format=torch.channels_last if self.channels_last
                                else torch.contiguous_format)

    class SignSTE(torch.autograd.Function):
        """``sign`` (sign(0) = +1) with the clipped-identity STE: grad passes where |x| <= 1."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x >= 0).to(x.dtype) * 2 - 1

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * (x.abs() <= 1).to(g.dtype)

    class BinaryConv2d(nn.Conv2d):
        """3x3 conv on ``sign(x)`` with weights ``tau sign(w~) + phi`` (learned scalars).

        Zero padding pads the binarized input with 0, as pysbnn's BinaryConv2d.
        Latent weights start U(+-1/sqrt(fan_in)) as pysbnn's default init.
        """

        def __init__(self, c_in, c_out, kernel_size=3, stride=1, padding=1):
            super().__init__(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False)
            bound = 1.0 / (c_in * kernel_size * kernel_size) ** 0.5
            with torch.no_grad():
                self.weight.uniform_(-bound, bound)
            self.tau = nn.Parameter(torch.ones(()))
            self.phi = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            w = self.tau * SignSTE.apply(self.weight) + self.phi
            return F.conv2d(SignSTE.apply(x), w, None, self.stride, self.padding)

    class BinaryLinear(nn.Linear):
        """bench_train.torch_setup's binary Linear (copied): learned tau/phi, sign STE."""

        def __init__(self, i, o, binarize_input):
            super().__init__(i, o, bias=False)
            self.binarize_input = binarize_input
            self.tau = nn.Parameter(torch.ones(()))
            self.phi = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            if self.binarize_input:
                x = SignSTE.apply(x)
            w = self.tau * SignSTE.apply(self.weight) + self.phi
            return x @ w.t()

    class Unit(nn.Module):
        """IR-Net unit: ``Hardtanh(BN(conv3x3(x)) + shortcut(x))``."""

        def __init__(self, conv, c_out, shortcut=None):
            super().__init__()
            self.conv, self.bn = conv, nn.BatchNorm2d(c_out)
            self.shortcut = shortcut if shortcut is not None else nn.Identity()
            self.act = nn.Hardtanh()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)) + self.shortcut(x))

    _CACHE["m"] = {"torch": torch, "nn": nn, "Normalize": Normalize, "SignSTE": SignSTE,
                   "BinaryConv2d": BinaryConv2d, "BinaryLinear": BinaryLinear, "Unit": Unit}
    return _CACHE["m"]


def _seed(seed):
    if seed is not None:
        _modules()["torch"].manual_seed(seed)


# ---------------------------------------------------------------- networks
def mlp_float32(sizes=(784, 512, 512, 10), mean=MNIST_MEAN, std=MNIST_STD, seed=0):
    """Inference twin of ``pysbnn.binary_mlp(sizes)``, float32.

    ``Normalize(flatten) -> Linear(no bias) -> BatchNorm1d -> [Hardtanh ->
    Linear -> BatchNorm1d]*``: pysbnn's ``BinaryDense -> BatchNorm1d`` layers
    with float weights of the same shapes, ``Hardtanh`` in place of the
    ``sign`` that the next binary layer applies to its input. Takes raw uint8
    images (n, 28, 28); the last BatchNorm's outputs are the logits. Returned
    in eval mode.
    """
    m = _modules()
    nn = m["nn"]
    _seed(seed)
    sizes = [int(s) for s in sizes]
    layers = [m["Normalize"](mean, std, flatten=True)]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i > 0:
            layers.append(nn.Hardtanh())
        layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b)]
    return nn.Sequential(*layers).eval()


def _resnet18(conv3x3, width, in_channels, num_classes, mean, std, channels_last):
    """ResNet-18 of pysbnn.resnet's topology with ``conv3x3(c_in, c_out, stride)`` units."""
    m = _modules()
    nn, Unit = m["nn"], m["Unit"]
    if mean is None:
        mean = FASHION_MNIST_MEAN if in_channels == 1 else CIFAR10_MEAN
    if std is None:
        std = FASHION_MNIST_STD if in_channels == 1 else CIFAR10_STD
    layers = [m["Normalize"](mean, std, channels_last=channels_last),
              nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
    c_in = width
    for stage, blocks in enumerate(BLOCKS):
        c_out = width * 2 ** stage
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            shortcut = None
            if stride != 1 or c_in != c_out:
                shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(c_out))
            layers.append(Unit(conv3x3(c_in, c_out, stride), c_out, shortcut))
            layers.append(Unit(conv3x3(c_out, c_out, 1), c_out))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(c_in), nn.Linear(c_in, num_classes)]
    net = nn.Sequential(*layers)
    if channels_last:
        net = net.to(memory_format=m["torch"].channels_last)
    return net


def resnet18_float32(width=16, in_channels=1, num_classes=10, mean=None, std=None,
                     channels_last=True, seed=0):
    """Float32 network of the shapes of ``pysbnn.resnet.resnet18(width=...)``, eval mode.

    Stem 3x3 conv + BN (no activation, as pysbnn); four stages of two IR-Net
    BasicBlocks (widths w, 2w, 4w, 8w; stride 2 at the first block of stages
    2-4), each 3x3 conv a ``Hardtanh(BN(conv(x)) + shortcut(x))`` unit with a
    1x1 conv + BN shortcut where the shape changes; global average pool,
    BatchNorm1d, Linear. The 16 binary convs of pysbnn are ordinary float
    convs here. Tensors are NCHW-shaped; ``channels_last=True`` (the default)
    stores weights and activations NHWC in memory, which PyTorch 2.13.0 ran
    1.2-1.3x faster at batch 256 with one thread on a 2-core AVX2 host (4 runs
    of 4); at batch 1 the two were within noise (each ahead in 2 runs of 4).
    """
    nn = _modules()["nn"]
    _seed(seed)

    def conv3x3(c_in, c_out, stride):
        return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)

    return _resnet18(conv3x3, width, in_channels, num_classes, mean, std, channels_last).eval()


def binary_resnet18_train(width=8, in_channels=1, num_classes=10, mean=None, std=None,
                          channels_last=None, seed=0):
    """Training twin of the binarized ``pysbnn.resnet.resnet18(width=...)``, train mode.

    The topology of :func:`resnet18_float32` with each of the 16 3x3 convs a
    binary conv: ``sign`` on weights and on the input with the
    clipped-identity STE (gradient where ``|x| <= 1``), learned scalar
    ``tau``/``phi`` per conv (``w = tau sign(w~) + phi``, init 1 and 0). Stem,
    shortcuts and classifier stay float, as in pysbnn. Train it with
    :func:`train_step_fn` (Adam; latent weights clipped to [-1.5, 1.5] after
    each step, as pysbnn's ``clip_latent_weights``).

    ``channels_last``: None (default) picks it for ``width >= 16``
    (:data:`CHANNELS_LAST_MIN_TRAIN_WIDTH`), NCHW below. Measured on a 2-core
    AVX2 host at width 16 batch 128: channels_last faster with 2 threads in 4
    runs of 4, with 1 thread in 3 of 4 (1.04-1.3x; 0.72x in the fourth); at
    width 8 batch 32 it was mixed (1 thread: 1.16-1.23x faster in 2 runs,
    1.48x slower in a third). True below width 16 raises ValueError (oneDNN
    bug, see :data:`CHANNELS_LAST_MIN_TRAIN_WIDTH`).

    Checked in float64 against pysbnn (``resnet18(quantizer="clipped")`` with
    the same weights): logits agree to 4e-15 and gradients to 2e-13 (the tau gradients, sums
    with heavy cancellation, to 1e-5 of their size), except
    where a Hardtanh input is exactly +-1, at which PyTorch's ``Hardtanh``
    passes no gradient and pysbnn's passes it (``|x| <= 1``); the twin keeps
    PyTorch's native op, the point being its speed.
    """
    BinaryConv2d = _modules()["BinaryConv2d"]
    if channels_last is None:
        channels_last = width >= CHANNELS_LAST_MIN_TRAIN_WIDTH
    elif channels_last and width < CHANNELS_LAST_MIN_TRAIN_WIDTH:
        raise ValueError(f"channels_last training needs width >= {CHANNELS_LAST_MIN_TRAIN_WIDTH} "
                         f"(got {width}): oneDNN's NHWC 1x1 stride-2 weight gradient is wrong or "
                         "crashes for fewer input channels (oneDNN issue #6035)")
    _seed(seed)

    def conv3x3(c_in, c_out, stride):
        return BinaryConv2d(c_in, c_out, 3, stride=stride, padding=1)

    return _resnet18(conv3x3, width, in_channels, num_classes, mean, std, channels_last).train()


def binary_mlp_train(sizes=(784, 512, 512, 10)):
    """bench_train.torch_setup("bnn")'s network: float input (n, 784), no Normalize.

    ``BinaryLinear(real input) -> BN -> Hardtanh -> [BinaryLinear(sign input)
    -> BN -> Hardtanh]* ... -> BN`` (the last BN gives the logits).
    """
    m = _modules()
    nn, BinaryLinear = m["nn"], m["BinaryLinear"]
    layers = []
    pairs = list(zip(sizes[:-1], sizes[1:]))
    for i, (a, b) in enumerate(pairs):
        layers += [BinaryLinear(a, b, i > 0), nn.BatchNorm1d(b)]
        if i < len(pairs) - 1:
            layers.append(nn.Hardtanh())
    return nn.Sequential(*layers)


def mlp_train(sizes=(784, 512, 512, 10)):
    """bench_train.torch_setup("float")'s network: Linear/ReLU MLP, float input (n, 784)."""
    nn = _modules()["nn"]
    layers = []
    pairs = list(zip(sizes[:-1], sizes[1:]))
    for i, (a, b) in enumerate(pairs):
        layers.append(nn.Linear(a, b))
        if i < len(pairs) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def latent_weights(net):
    """The latent weights of the binary layers of ``net`` (clipped after each step)."""
    m = _modules()
    kinds = (m["BinaryConv2d"], m["BinaryLinear"])
    return [mod.weight for mod in net.modules() if isinstance(mod, kinds)]


# ------------------------------------------------------------------ timing
def set_threads(threads):
    """``torch.set_num_threads(threads)`` unless already set (None: leave as is)."""
    torch = _modules()["torch"]
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))


def _tensor(a):
    torch = _modules()["torch"]
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(a)


def inference_fn(net, x, threads=None):
    """Zero-argument callable: one eval-mode forward of ``x`` under ``torch.inference_mode()``.

    ``x`` is a NumPy array (shared, not copied) or a tensor. The callable sets
    the thread count on each call if it changed (so callables of different
    thread counts can be interleaved) and returns the output tensor.
    """
    torch = _modules()["torch"]
    xt = _tensor(x)
    net.eval()

    def run():
        set_threads(threads)
        with torch.inference_mode():
            return net(xt)

    return run


def train_step_fn(net, x, y, threads=None, lr=1e-3, clip=1.5):
    """Zero-argument callable: one training step of ``net`` on the batch ``(x, y)``.

    ``zero_grad -> cross-entropy(net(x), y) -> backward -> Adam step`` (one
    Adam per callable, PyTorch's default implementation), then the latent
    weights of binary layers are clamped to ``[-clip, clip]`` (None/0: off),
    as pysbnn's ``Adam(post_step=[clip_latent_weights])``. Train mode (batch
    statistics in BatchNorm). Returns the loss tensor.
    """
    torch = _modules()["torch"]
    xt, yt = _tensor(x), _tensor(y).long()
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    lossf = torch.nn.CrossEntropyLoss()
    latent = latent_weights(net) if clip else []

    def step():
        set_threads(threads)
        opt.zero_grad(set_to_none=True)
        loss = lossf(net(xt), yt)
        loss.backward()
        opt.step()
        if latent:
            with torch.no_grad():
                for w in latent:
                    w.clamp_(-clip, clip)
        return loss

    return step


def _median_seconds(f, rounds=7, min_batch_seconds=2e-3):
    """Median seconds per call of ``f`` over ``rounds`` timed batches (after a warm-up)."""
    f()
    t0 = time.perf_counter()
    f()
    n = max(1, int(min_batch_seconds / max(time.perf_counter() - t0, 1e-7)))
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples)


def time_inference(net, x, threads, rounds=7):
    """Median seconds of one inference-mode forward of the batch ``x`` with ``threads`` threads.

    Divide by ``len(x)`` for seconds per image. To compare with pysbnn on a
    shared host, interleave :func:`inference_fn` instead.
    """
    return _median_seconds(inference_fn(net, x, threads), rounds)


def time_train_step(net, x, y, threads, rounds=7, lr=1e-3):
    """Median seconds of one training step (see :func:`train_step_fn`) with ``threads`` threads.

    Note that it trains ``net`` (Adam updates its weights) while timing.
    """
    return _median_seconds(train_step_fn(net, x, y, threads, lr=lr), rounds)
