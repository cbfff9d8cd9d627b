"""dsmnet_arch/__init__.py: importing the package registers DSMNet & co. with BasicSR and fixes BasicSR 1.4.2."""


def test_import_registers_everything_and_fixes_torchvision():
    import dsmnet_arch  # noqa: F401

    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

    assert ARCH_REGISTRY.get('DSMNet').__module__ == 'dsmnet_arch.archs.dsmnet_arch'
    assert LOSS_REGISTRY.get('MSESSIMLoss').__module__.startswith('dsmnet_arch.losses')
    assert MODEL_REGISTRY.get('DerainModel').__module__ == 'dsmnet_arch.models.derain_model'
    # basicsr.data.degradations needs the module torchvision 0.17 removed
    from torchvision.transforms.functional_tensor import rgb_to_grayscale

    from basicsr.data import degradations
    assert degradations.rgb_to_grayscale is rgb_to_grayscale
