package p2p

import (
	// Linked so that digest.Digest.Validate accepts sha256: and sha512:
	// digests regardless of what the importing binary links.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"
)

var (
	// ErrInvalidDigest reports a digest that is malformed or uses an
	// algorithm with no DHT key (only sha256 and sha512 have one).
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrInvalidKey reports a CID that is not the DHT key of any digest.
	ErrInvalidKey = errors.New("invalid dht key")
)

// Key returns the DHT key of a blob: a CIDv1 with the raw codec over the
// multihash of the digest's own bytes. Using the digest bytes unchanged, rather
// than hashing the digest string, keeps the key equal to what any IPFS-style
// tool computes for the same content.
func Key(d digest.Digest) (cid.Cid, error) {
	if err := d.Validate(); err != nil {
		return cid.Undef, fmt.Errorf("dht key of %q: %w: %w", d, ErrInvalidDigest, err)
	}
	var code uint64
	switch d.Algorithm() {
	case digest.SHA256:
		code = multihash.SHA2_256
	case digest.SHA512:
		code = multihash.SHA2_512
	default:
		return cid.Undef, fmt.Errorf("dht key of %s: %w: algorithm %s", d, ErrInvalidDigest, d.Algorithm())
	}
	raw, err := hex.DecodeString(d.Encoded())
	if err != nil {
		return cid.Undef, fmt.Errorf("dht key of %s: %w: %w", d, ErrInvalidDigest, err)
	}
	mh, err := multihash.Encode(raw, code)
	if err != nil {
		return cid.Undef, fmt.Errorf("dht key of %s: %w", d, err)
	}
	return cid.NewCidV1(cid.Raw, mh), nil
}

// DigestOf is the inverse of Key. It rejects any CID that Key cannot
// produce: another version, codec or hash function, or a truncated hash.
func DigestOf(c cid.Cid) (digest.Digest, error) {
	if !c.Defined() {
		return "", fmt.Errorf("digest of cid: %w: undefined", ErrInvalidKey)
	}
	if c.Version() != 1 || c.Type() != cid.Raw {
		return "", fmt.Errorf("digest of %s: %w: want cidv1 raw, have v%d codec %#x", c, ErrInvalidKey, c.Version(), c.Type())
	}
	dec, err := multihash.Decode(c.Hash())
	if err != nil {
		return "", fmt.Errorf("digest of %s: %w: %w", c, ErrInvalidKey, err)
	}
	var alg digest.Algorithm
	switch dec.Code {
	case multihash.SHA2_256:
		alg = digest.SHA256
	case multihash.SHA2_512:
		alg = digest.SHA512
	default:
		return "", fmt.Errorf("digest of %s: %w: hash %s", c, ErrInvalidKey, dec.Name)
	}
	d := digest.NewDigestFromEncoded(alg, hex.EncodeToString(dec.Digest))
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest of %s: %w: %w", c, ErrInvalidKey, err)
	}
	return d, nil
}
