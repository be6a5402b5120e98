package p2p

import (
	"errors"
	"testing"
)

func TestSignVerify(t *testing.T) {
	h := newTestHost(t, HostOptions{})
	s, err := NewSigner(h)
	if err != nil {
		t.Fatal(err)
	}
	if s.ID() != h.ID().String() {
		t.Fatalf("signer ID %s, host %s", s.ID(), h.ID())
	}
	msg := []byte("announce: sha256:abc")
	sig, err := s.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(s.ID(), msg, sig); err != nil {
		t.Fatalf("VerifySignature = %v", err)
	}
	other := newTestHost(t, HostOptions{})
	for name, tc := range map[string]struct {
		id       string
		msg, sig []byte
	}{
		"other message": {s.ID(), []byte("announce: sha256:abd"), sig},
		"other peer":    {other.ID().String(), msg, sig},
		"flipped bit":   {s.ID(), msg, append(append([]byte(nil), sig[:len(sig)-1]...), sig[len(sig)-1]^1)},
		"empty":         {s.ID(), msg, nil},
		"huge":          {s.ID(), msg, make([]byte, 4096)},
		"not a peer ID": {"not-a-peer", msg, sig},
		"empty peer ID": {"", msg, sig},
		"truncated sig": {s.ID(), msg, sig[:32]},
	} {
		err := VerifySignature(tc.id, tc.msg, tc.sig)
		if err == nil {
			t.Errorf("%s: VerifySignature = nil, want an error", name)
		}
		if name == "other message" && !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
}
