//! The test vectors of SPEC §2, and the published HMAC vectors for keys longer than a block.

use aliot_auth::{DeviceIdentity, SignMethod, content, sign_content};

/// One row of SPEC §2's table: content, key, method, digest as the SPEC writes it.
struct Vector {
    content: &'static str,
    key: &'static str,
    method: SignMethod,
    digest: &'static str,
}

const SPEC_VECTORS: [Vector; 6] = [
    Vector {
        content: "clientId12345deviceNamedeviceproductKeypktimestamp789",
        key: "secret",
        method: SignMethod::HmacSha1,
        digest: "FAFD82A3D602B37FB0FA8B7892F24A477F851A14",
    },
    Vector {
        content: "clientId12345deviceNamedeviceproductKeypktimestamp789",
        key: "secret",
        method: SignMethod::HmacSha256,
        digest: "6074a46a91b1ebb2cc4ea42790ad0e80202c9843859fc292e57c4eb19fad9e57",
    },
    Vector {
        content: "clientId12345deviceNamedeviceproductKeypktimestamp789",
        key: "secret",
        method: SignMethod::HmacMd5,
        digest: "14b198324fe55e1d3c88f2e705e201ee",
    },
    Vector {
        content: "clientId12345deviceNamedeviceproductKeypk",
        key: "secret",
        method: SignMethod::HmacSha1,
        digest: "3504e4df7ce4766d30f796ee973c9ce7fc5425cb",
    },
    Vector {
        content: "clientIdSN1928339deviceNamelight1983432productKeya14Xib5kdYdtimestamp1539421321846",
        key: "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq",
        method: SignMethod::HmacSha1,
        digest: "b2488041f64f425016b467ee1c94959ebd592ad1",
    },
    Vector {
        content: "clientIda1TestPK001.dev-001deviceNamedev-001productKeya1TestPK001timestamp2524608000000",
        key: "0123456789abcdef0123456789abcdef",
        method: SignMethod::HmacSha256,
        digest: "CC10D0112DBAFA9A6FC0D8FC3E5B6BA3FF9CB258D2F77C0E9153A83E4BCAE470",
    },
];

#[test]
fn every_spec_vector_signs_to_its_digest_in_lowercase() {
    for vector in &SPEC_VECTORS {
        assert_eq!(
            sign_content(vector.method, vector.key.as_bytes(), vector.content),
            vector.digest.to_ascii_lowercase(),
            "{} over {:?}",
            vector.method,
            vector.content
        );
    }
}

#[test]
fn spec_contents_are_built_from_their_fields() {
    let device = DeviceIdentity::new("pk", "device");
    assert_eq!(
        content("12345", &device, Some("789")),
        SPEC_VECTORS[0].content
    );
    assert_eq!(content("12345", &device, None), SPEC_VECTORS[3].content);
    assert_eq!(
        content(
            "SN1928339",
            &DeviceIdentity::new("a14Xib5kdYd", "light1983432"),
            Some("1539421321846")
        ),
        SPEC_VECTORS[4].content
    );
    assert_eq!(
        content(
            "a1TestPK001.dev-001",
            &DeviceIdentity::new("a1TestPK001", "dev-001"),
            Some("2524608000000")
        ),
        SPEC_VECTORS[5].content
    );
}

#[test]
fn keys_longer_than_a_hash_block_are_hashed_first() {
    // RFC 2202 test case 6 (HMAC-SHA1 and HMAC-MD5) and RFC 4231 test case 6 (HMAC-SHA256).
    let data = "Test Using Larger Than Block-Size Key - Hash Key First";
    assert_eq!(
        sign_content(SignMethod::HmacSha1, &[0xaa; 80], data),
        "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    );
    assert_eq!(
        sign_content(SignMethod::HmacMd5, &[0xaa; 80], data),
        "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"
    );
    assert_eq!(
        sign_content(SignMethod::HmacSha256, &[0xaa; 131], data),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn keys_of_exactly_one_block_and_one_byte_more_differ() {
    assert_eq!(
        sign_content(SignMethod::HmacSha256, &[b'k'; 64], "x"),
        "f91c4c403625fb06910ef93999265bbd2d62baeaec6ff36455498cc124fe3e66"
    );
    assert_eq!(
        sign_content(SignMethod::HmacSha256, &[b'k'; 65], "x"),
        "75092ca3ee2b307470c227697b42b3e65376aa3bae98fb5a1f7b7536daa9588a"
    );
}
