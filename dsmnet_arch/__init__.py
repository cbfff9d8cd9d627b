"""DSM-Net (Deep Scale-space Mining Network, CVPRW 2022) for BasicSR.

``import dsmnet_arch`` first applies the BasicSR 1.4.2 compatibility fixes, then registers the
package's architectures, losses and models with BasicSR's registries.
"""
# isort: off
from dsmnet_arch import compat  # noqa: F401  (must run before anything imports basicsr)
from dsmnet_arch import archs, losses, metrics, models  # noqa: F401
# isort: on

__version__ = '0.1.0'
