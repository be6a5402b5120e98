package tracker

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"http://tracker:5090":        "http://tracker:5090",
		"https://tracker.example/x/": "https://tracker.example/x",
		"ftp://tracker":              "",
		"tracker:5090":               "",
		"http://":                    "",
		"http://u:p@tracker":         "",
		"http://tracker?x=1":         "",
	} {
		got, err := ParseURL(raw)
		if (err == nil) != (want != "") || got != want {
			t.Errorf("ParseURL(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
}

// fakeSigner "signs" by prefixing the data with its ID, which fakeVerify checks.
type fakeSigner string

func (s fakeSigner) ID() string                       { return string(s) }
func (s fakeSigner) Sign(data []byte) ([]byte, error) { return append([]byte(s+":"), data...), nil }

var errForged = errors.New("forged")

func fakeVerify(peer string, data, sig []byte) error {
	if !bytes.Equal(sig, append([]byte(peer+":"), data...)) {
		return errForged
	}
	return nil
}

// TestSignVerify: what Sign puts on a request is what Verify accepts, for that method, path
// and body only.
func TestSignVerify(t *testing.T) {
	t.Parallel()
	body := []byte(`{"peer":"a"}`)
	req, err := http.NewRequest(http.MethodPost, "http://tracker"+PathAnnounce, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := Sign(req, fakeSigner("a"), body); err != nil {
		t.Fatal(err)
	}
	if got := req.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	}
	if peer, err := Verify(req.Header, http.MethodPost, PathAnnounce, body, fakeVerify); err != nil || peer != "a" {
		t.Errorf("Verify(signed request) = %q, %v; want a, nil", peer, err)
	}
	for name, tc := range map[string]struct {
		h    http.Header
		path string
		body []byte
	}{
		"other path":   {req.Header, PathLease, body},
		"other body":   {req.Header, PathAnnounce, []byte(`{"peer":"b"}`)},
		"no signature": {http.Header{HeaderPeer: {"a"}}, PathAnnounce, body},
		"no peer":      {http.Header{HeaderSignature: req.Header[HeaderSignature]}, PathAnnounce, body},
		"not base64":   {http.Header{HeaderPeer: {"a"}, HeaderSignature: {"!!"}}, PathAnnounce, body},
	} {
		if peer, err := Verify(tc.h, http.MethodPost, tc.path, tc.body, fakeVerify); err == nil {
			t.Errorf("Verify(%s) = %q, nil; want an error", name, peer)
		}
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	for raw, ok := range map[string]bool{
		`{"peers":["x"]}`:       true,
		`{"peers":[],"evil":1}`: false,
		`{"peers":[]} {}`:       false,
		`{"peers":[]}` + "\n":   true,
		`not json`:              false,
	} {
		var v BootstrapResponse
		if err := Decode([]byte(raw), &v); (err == nil) != ok {
			t.Errorf("Decode(%q) = %v, want ok %v", raw, err, ok)
		}
	}
}
