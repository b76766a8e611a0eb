"""HLS segment encryption: AES-128 (whole segments) and SAMPLE-AES (MPEG-TS samples).

Pure transforms, bytes in and bytes out; key storage and delivery belong to the origin.
"""

from .aes128 import (
    NO_KEY_TAG,
    decrypt_segment,
    encrypt_segment,
    iv_attribute,
    key_period,
    key_tag,
    segment_iv,
    starts_key_period,
)
from .sample_aes import (
    decrypt_adts_frame,
    decrypt_annexb_sample,
    encrypt_adts_frame,
    encrypt_annexb_sample,
    pmt_stream,
)

__all__ = [
    "NO_KEY_TAG",
    "decrypt_adts_frame",
    "decrypt_annexb_sample",
    "decrypt_segment",
    "encrypt_adts_frame",
    "encrypt_annexb_sample",
    "encrypt_segment",
    "iv_attribute",
    "key_period",
    "key_tag",
    "pmt_stream",
    "segment_iv",
    "starts_key_period",
]
