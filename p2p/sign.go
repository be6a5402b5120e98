package p2p

import (
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrBadSignature means a signature does not verify against the peer ID it claims.
var ErrBadSignature = errors.New("signature does not match the peer ID")

// Signer signs with a host's identity key, so that a service outside libp2p (the tracker's
// HTTP API) can tell which peer sent a message, and that no one else could have.
type Signer struct {
	id  peer.ID
	key crypto.PrivKey
}

// NewSigner returns the signer of host h.
func NewSigner(h host.Host) (*Signer, error) {
	key := h.Peerstore().PrivKey(h.ID())
	if key == nil {
		return nil, errors.New("host has no private key")
	}
	return &Signer{id: h.ID(), key: key}, nil
}

// GenerateSigner makes a new Ed25519 identity from the randomness of r and returns its signer,
// for a peer that has no host, such as a simulated one.
func GenerateSigner(r io.Reader) (*Signer, error) {
	key, _, err := crypto.GenerateEd25519Key(r)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("peer ID of key: %w", err)
	}
	return &Signer{id: id, key: key}, nil
}

// ID is the peer ID signatures verify against.
func (s *Signer) ID() string { return s.id.String() }

// Sign signs data.
func (s *Signer) Sign(data []byte) ([]byte, error) { return s.key.Sign(data) }

// maxSignature bounds a signature before it is parsed: Ed25519's are 64 bytes.
const maxSignature = 512

// VerifySignature checks that sig is peerID's signature of data. The public key comes from
// the peer ID itself (an Ed25519 key is inlined in its ID), so no key exchange is needed;
// IDs that do not inline their key are refused.
func VerifySignature(peerID string, data, sig []byte) error {
	if len(sig) == 0 || len(sig) > maxSignature {
		return fmt.Errorf("%w: %d-byte signature", ErrBadSignature, len(sig))
	}
	id, err := peer.Decode(peerID)
	if err != nil {
		return fmt.Errorf("peer ID %q: %w", peerID, err)
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("peer ID %s carries no public key: %w", peerID, err)
	}
	if pub.Type() != crypto.Ed25519 {
		return fmt.Errorf("peer ID %s: key type %s, want Ed25519", peerID, pub.Type())
	}
	ok, err := pub.Verify(data, sig)
	if err != nil || !ok {
		return ErrBadSignature
	}
	return nil
}
