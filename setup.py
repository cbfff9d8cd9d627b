#!/usr/bin/env python
"""Install with ``pip install --no-build-isolation -e .`` after torch and basicsr (see README)."""
from setuptools import find_packages, setup

setup(
    name='dsmnet_arch',
    version='0.1.0',
    description='DSM-Net (Deep Scale-space Mining Network) single-image deraining for BasicSR',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['dsmnet_arch', 'dsmnet_arch.*']),
    package_data={'dsmnet_arch': ['weights/*.pth', 'weights/*.md']},  # the bundled weights and their card
    python_requires='>=3.11,<3.13',
    install_requires=[
        'torch>=2.0', 'torchvision', 'basicsr==1.4.2', 'numpy', 'opencv-python', 'lmdb', 'pyyaml',
        'tb-nightly', 'scikit-image', 'tqdm'
    ],
    extras_require={
        'export': ['onnx', 'onnxruntime'],
        'web': ['gradio>=6'],  # gr.ImageSlider, launch(theme=, footer_links=)
        'video': ['av>=14'],  # add_stream_from_template
    },
    entry_points={'console_scripts': [
        'dsmnet-train=dsmnet_arch.train:main',
        'dsmnet-test=dsmnet_arch.test:main',
        'dsmnet-derain=dsmnet_arch.infer:main',
        'dsmnet-export=dsmnet_arch.export:main',
        'dsmnet-score=dsmnet_arch.score:main',
    ]},
    license='Apache-2.0',
)
