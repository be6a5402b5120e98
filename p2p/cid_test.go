package p2p

import (
	"errors"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"
)

func TestKey(t *testing.T) {
	t.Parallel()
	sha256Empty := digest.FromString("")
	sha512Empty := digest.SHA512.FromString("")
	tests := []struct {
		name    string
		d       digest.Digest
		want    string
		wantErr error
	}{
		{
			name: "sha256",
			d:    sha256Empty,
			// The well-known CIDv1 raw of the empty input.
			want: "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
		},
		{name: "sha512", d: sha512Empty},
		{name: "empty", d: "", wantErr: ErrInvalidDigest},
		{name: "no algorithm", d: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", wantErr: ErrInvalidDigest},
		{name: "short", d: "sha256:e3b0", wantErr: ErrInvalidDigest},
		{name: "upper case", d: digest.Digest(strings.ToUpper(string(sha256Empty))), wantErr: ErrInvalidDigest},
		{name: "sha384", d: digest.SHA384.FromString(""), wantErr: ErrInvalidDigest},
		{name: "unknown algorithm", d: "md5:d41d8cd98f00b204e9800998ecf8427e", wantErr: ErrInvalidDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Key(tt.d)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Key(%q) = %v, %v, want error %v", tt.d, c, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Key(%q) = %v, want nil error", tt.d, err)
			}
			if c.Version() != 1 || c.Type() != cid.Raw {
				t.Errorf("Key(%q) = v%d codec %#x, want v1 raw", tt.d, c.Version(), c.Type())
			}
			if tt.want != "" && c.String() != tt.want {
				t.Errorf("Key(%q) = %s, want %s", tt.d, c, tt.want)
			}
			back, err := DigestOf(c)
			if err != nil || back != tt.d {
				t.Errorf("DigestOf(Key(%q)) = %q, %v, want %q", tt.d, back, err, tt.d)
			}
		})
	}
}

func TestDigestOf(t *testing.T) {
	t.Parallel()
	sum := digest.FromString("shoal")
	good, err := Key(sum)
	if err != nil {
		t.Fatal(err)
	}
	mh := good.Hash()
	md5, err := multihash.Sum([]byte("x"), multihash.MD5, -1)
	if err != nil {
		t.Fatal(err)
	}
	truncated, err := multihash.Encode(make([]byte, 20), multihash.SHA2_256)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		c       cid.Cid
		want    digest.Digest
		wantErr error
	}{
		{name: "raw v1 sha256", c: good, want: sum},
		{name: "undefined", c: cid.Undef, wantErr: ErrInvalidKey},
		{name: "cidv0", c: cid.NewCidV0(mh), wantErr: ErrInvalidKey},
		{name: "dag-pb codec", c: cid.NewCidV1(cid.DagProtobuf, mh), wantErr: ErrInvalidKey},
		{name: "md5 hash", c: cid.NewCidV1(cid.Raw, md5), wantErr: ErrInvalidKey},
		{name: "truncated sha256", c: cid.NewCidV1(cid.Raw, truncated), wantErr: ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := DigestOf(tt.c)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("DigestOf(%v) = %q, %v, want error %v", tt.c, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("DigestOf(%v) = %q, %v, want %q", tt.c, got, err, tt.want)
			}
		})
	}
}

// FuzzKey checks that Key and DigestOf are exact inverses on every digest Key
// accepts and that DigestOf never panics on arbitrary CID bytes.
func FuzzKey(f *testing.F) {
	f.Add(string(digest.FromString("")), []byte{})
	f.Add(string(digest.SHA512.FromString("a")), []byte{0x01, 0x55, 0x12, 0x20})
	f.Add("sha256:zz", []byte{0x12, 0x20})
	f.Fuzz(func(t *testing.T, s string, raw []byte) {
		d := digest.Digest(s)
		if c, err := Key(d); err == nil {
			back, err := DigestOf(c)
			if err != nil || back != d {
				t.Fatalf("DigestOf(Key(%q)) = %q, %v, want %q", d, back, err, d)
			}
		}
		if c, err := cid.Cast(raw); err == nil {
			if got, err := DigestOf(c); err == nil {
				again, err := Key(got)
				if err != nil || !again.Equals(c) {
					t.Fatalf("Key(DigestOf(%v)) = %v, %v, want %v", c, again, err, c)
				}
			}
		}
	})
}
