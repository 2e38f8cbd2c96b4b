"""Pretrained teacher weights fetched when, and only when, the user asks: `--passt-weights audioset`,
`--weights mobilenetv2=imagenet`, or any `--weights FAMILY=https://...`.

The names resolve to the libraries' own published files (hear21passt's `default_cfgs` URL of the PaSST-S
architecture the roster builds, timm's pretrained config of the MobileNetV2 width), downloaded once by torch's
own downloader (`torch.hub.download_url_to_file`: temp file, then rename) into torch's hub cache
(`$TORCH_HOME/hub/checkpoints`), before any teacher starts; from there they load like a local file
(`teachers.passt.load_weights`: head dropped when the class count differs, RGB stems folded to one channel).
Without such an argument nothing is downloaded, ever.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from asc_dist.errors import ConfigError

log = logging.getLogger(__name__)
NAMED = {"passt": ("audioset",), "mobilenetv2": ("imagenet",)}


def named_url(family: str, name: str, arch: str | None = None) -> str:
    """The library's own URL for a named checkpoint of `family`."""
    if family == "passt" and name == "audioset":
        from hear21passt.models import passt as hear21

        return hear21.default_cfgs[arch or "passt_s_swa_p16_128_ap476"]["url"]
    if family == "mobilenetv2" and name == "imagenet":
        import timm

        cfg = timm.models.get_pretrained_cfg(f"mobilenetv2_{arch or '100'}")
        if cfg is None or not cfg.url:
            raise ConfigError(f"timm publishes no ImageNet file for mobilenetv2_{arch or '100'}")
        return cfg.url
    known = "; ".join(f"{f}: {', '.join(n)}" for f, n in NAMED.items())
    raise ConfigError(f"--weights {family}={name}: no named checkpoint {name!r} for {family} (named ones: {known}); "
                      "give a local file or an https:// URL")


def is_remote(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def is_named(family: str, spec: str) -> bool:
    return spec in NAMED.get(family, ())


def fetch(url: str) -> Path:
    """The file behind `url` in torch's hub cache, downloaded there first if missing."""
    import torch

    name = Path(urlparse(url).path).name or "weights.pt"
    target = Path(torch.hub.get_dir()) / "checkpoints" / name
    if target.is_file():
        log.info("pretrained weights %s: cached at %s", url, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading pretrained weights %s -> %s (asked for by the weights option)", url, target)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, timeouts: one line naming the URL
        raise ConfigError(f"could not download {url} ({str(exc).splitlines()[0][:200]}); download it yourself and pass the file "
                          "with --weights FAMILY=FILE") from None
    return target


def resolve(weights: dict[str, str], archs: dict[str, str | None] | None = None) -> dict[str, str]:
    """family -> local file: named checkpoints and URLs fetched, local paths kept as given."""
    out = {}
    for family, spec in weights.items():
        if is_named(family, spec):
            spec = named_url(family, spec, (archs or {}).get(family))
        out[family] = str(fetch(spec)) if is_remote(spec) else spec
    return out
