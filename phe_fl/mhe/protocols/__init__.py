"""The multiparty protocols, one per module, all speaking the same verbs."""

from phe_fl.mhe.protocols._share import Protocol, Share
from phe_fl.mhe.protocols.decryption import DecryptionShare, ThresholdDecrypt
from phe_fl.mhe.protocols.key_switch import KeySwitchShare, QueryKeySwitch
from phe_fl.mhe.protocols.public_key import PublicKeyGen, PublicKeyShare
from phe_fl.mhe.protocols.refresh import Refresh, RefreshCRP, RefreshShare
from phe_fl.mhe.protocols.relin_key import RelinKeyGen, RelinRound1Share, RelinRound2Share
from phe_fl.mhe.protocols.rotation_keys import RotationKeyGen, RotationKeysShare

__all__ = [
    "Protocol",
    "Share",
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
]
