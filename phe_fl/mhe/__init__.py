"""Network-free multiparty CKKS: the only part of phe-fl that touches OpenFHE.

Every protocol follows the same verbs so a transport can run any of them over a tree:
the lead samples the common random element (``gen_crp``), each party makes a share from
its own secret share (``gen_share``), shares ``aggregate`` in any order, the root
``finalize``s. Shares and keys serialize themselves with ``to_bytes``/``from_bytes``.
"""

from phe_fl.mhe.context import (
    MAX_ROTATION_KEYS,
    Ciphertext,
    Context,
    ciphertext_bytes,
    largest_message_bytes,
)
from phe_fl.mhe.heap import limit_arenas, release_free_memory
from phe_fl.mhe.keys import (
    JointPublicKey,
    QuerierKeyPair,
    QuerierPublicKey,
    RelinKey,
    RotationKeys,
    SecretShare,
)
from phe_fl.mhe.params import (
    INSECURE_TEST,
    N14_128,
    N15_128,
    N16_128,
    PARAMETER_SETS,
    ParameterSet,
    get_parameter_set,
)
from phe_fl.mhe.party import Party
from phe_fl.mhe.protocols import (
    DecryptionShare,
    KeySwitchShare,
    PublicKeyGen,
    PublicKeyShare,
    QueryKeySwitch,
    Refresh,
    RefreshCRP,
    RefreshShare,
    RelinKeyGen,
    RelinRound1Share,
    RelinRound2Share,
    RotationKeyGen,
    RotationKeysShare,
    ThresholdDecrypt,
)
from phe_fl.mhe.simulation import LocalFederation

__all__ = [
    "Context",
    "limit_arenas",
    "release_free_memory",
    "MAX_ROTATION_KEYS",
    "largest_message_bytes",
    "ciphertext_bytes",
    "Ciphertext",
    "ParameterSet",
    "PARAMETER_SETS",
    "INSECURE_TEST",
    "N14_128",
    "N15_128",
    "N16_128",
    "get_parameter_set",
    "SecretShare",
    "JointPublicKey",
    "RelinKey",
    "RotationKeys",
    "QuerierPublicKey",
    "QuerierKeyPair",
    "Party",
    "PublicKeyGen",
    "PublicKeyShare",
    "RelinKeyGen",
    "RelinRound1Share",
    "RelinRound2Share",
    "RotationKeyGen",
    "RotationKeysShare",
    "ThresholdDecrypt",
    "DecryptionShare",
    "Refresh",
    "RefreshCRP",
    "RefreshShare",
    "QueryKeySwitch",
    "KeySwitchShare",
    "LocalFederation",
]
