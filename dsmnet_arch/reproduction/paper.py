"""The paper's figures as data: its data sets, Tables 2-5 (and our network-level reading of Table 5), and the
colour spaces and protocols ours are compared in."""
from dataclasses import dataclass

DATASETS = ('Rain100L', 'Rain100H', 'Rain800', 'Rain1400')
PAPER_PAIRS = {  # training / test pairs the paper counts; the shipped total_iter assumes them
    'Rain100L': (200, 100),
    'Rain100H': (1800, 100),
    'Rain800': (700, 100),
    'Rain1400': (12600, 1400),
}
PAPER_BATCH = 32
PAPER_RAINY = {  # Table 2, "Rainy": the score of the rainy input itself (PSNR, SSIM)
    'Rain100L': ('26.91', '0.838'),
    'Rain100H': ('13.35', '0.388'),
    'Rain800': ('21.16', '0.652'),
    'Rain1400': ('25.24', '0.810'),
}
# The paper's DSM-Net: its attention and subspaces, and all of Table 5's connections (in the MAB, and the
# network links of our reconstruction that the second reading of Table 5 switches).
DEFAULT_VARIANT = {'attention': 'ca+sa', 'num_subspaces': 8, 'mab_variant': 'M5', 'level_down': True, 'level_up': True,
                   'level_dense': True}
# Paper Table 5: the connections each variant keeps (Across-Down, Across-Up, Dense-Fusion), and its Rain100L
# PSNR/SSIM. Read as connections inside the MAB they are mab_variant (the table we reproduce); read as the
# links between the MABs they are DSMNet's level_down, level_up, level_dense (an extra table of ours).
TABLE5 = {
    'M1': ((False, False, False), ('36.15', '0.9757')),
    'M2': ((True, True, False), ('36.40', '0.9760')),
    'M3': ((True, False, True), ('36.65', '0.9770')),
    'M4': ((False, True, True), ('36.44', '0.9765')),
    'M5': ((True, True, True), ('38.27', '0.9829')),
}
LEVEL_KEYS = ('level_down', 'level_up', 'level_dense')  # Across-Down, Across-Up, Dense-Fusion between the MABs
NETWORK_TABLE = '5n'  # the key of the extra table (--table5-network-level)
# What the shipped test options report for the paper's sets: BasicSR's Y and RGB, and Y as the field's two
# families of MATLAB scripts score it (dsmnet_arch/metrics/protocol_metrics.py); metric names <psnr|ssim>_<space>.
SPACES = {'y': 'Y', 'rgb': 'RGB', 'y_restormer': 'Restormer Y', 'y_rcdnet': 'RCDNet Y'}
METRICS = tuple(f'{m}_{space}' for space in SPACES for m in ('psnr', 'ssim'))


@dataclass(frozen=True)
class Row:
    """One row of a paper table: its label, test set, network arguments and the paper's PSNR/SSIM."""
    label: str
    dataset: str
    variant: tuple  # ((argument, value), ...) that differ from DEFAULT_VARIANT
    paper: tuple  # (PSNR, SSIM) as printed


def _ablation(label, key, value, psnr, ssim):
    return Row(label, 'Rain100L', ((key, value), ) if value != DEFAULT_VARIANT[key] else (), (psnr, ssim))


TABLES = {
    2: ('Table 2: DSM-Net on the four test sets', [
        Row('Rain100L', 'Rain100L', (), ('38.27', '0.982')),
        Row('Rain100H', 'Rain100H', (), ('28.62', '0.902')),
        Row('Rain800', 'Rain800', (), ('27.76', '0.871')),
        Row('Rain1400', 'Rain1400', (), ('30.93', '0.929')),
    ]),
    3: ('Table 3: CADB attention branches (Rain100L)', [
        _ablation('CA', 'attention', 'ca', '37.36', '0.976'),
        _ablation('SP', 'attention', 'sp', '37.90', '0.980'),
        _ablation('SA', 'attention', 'sa', '37.08', '0.978'),
        _ablation('CA+SP', 'attention', 'ca+sp', '38.21', '0.981'),
        _ablation('SP+SA', 'attention', 'sp+sa', '37.86', '0.981'),
        _ablation('CA+SA', 'attention', 'ca+sa', '38.27', '0.982'),
    ]),
    4: ('Table 4: number of subspaces n of the subspace attention (Rain100L)', [
        _ablation('n = 4', 'num_subspaces', 4, '38.08', '0.9825'),
        _ablation('n = 8', 'num_subspaces', 8, '38.27', '0.9829'),
        _ablation('n = 16', 'num_subspaces', 16, '38.11', '0.9826'),
    ]),
    5: ('Table 5: connections inside the MAB (Rain100L)',
        [_ablation(label, 'mab_variant', label, *paper) for label, (_, paper) in TABLE5.items()]),
}


def _network_level(label, connections, paper):
    variant = tuple((key, on) for key, on in zip(LEVEL_KEYS, connections) if on != DEFAULT_VARIANT[key])
    return Row(label, 'Rain100L', variant, paper)


# Not a table of the paper: its Table 5 read as the links between the MABs. Only with --table5-network-level.
OUR_TABLES = {
    NETWORK_TABLE: ('Table 5, network-level reading (ours, not an experiment of the paper): Across-Down, Across-Up '
                    'and Dense-Fusion as the links between the MABs (level_down, level_up, level_dense), every MAB '
                    'the full M5 (Rain100L)',
                    [_network_level(label, connections, paper) for label, (connections, paper) in TABLE5.items()]),
}
ALL_TABLES = {**TABLES, **OUR_TABLES}
