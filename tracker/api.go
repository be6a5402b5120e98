// Package tracker is the wire protocol of shoal's optional tracker: the requests and answers,
// their paths and limits, and how a request is signed. The node's client of the trackers is
// tracker/client, the tracker's HTTP handlers and soft state are tracker/server, and
// `shoal tracker` is tracker/daemon. This package needs no network stack: a peer's key is
// reached through Signer and Verifier.
//
// A tracker keeps soft state only: which nodes are in the swarm of each blob (downloading
// it, with their progress, or holding it) and short leases on chunks to fetch from the
// origin, so that at most one node fetches a given chunk from the origin at a time across the
// fleet. Everything is rebuilt from the nodes' next announces after a restart, and several
// trackers can run side by side. A node that cannot reach any tracker carries on with the
// DHT alone.
//
// The protocol is JSON over HTTP. Every POST is signed by the node's libp2p identity key
// (p2p.Signer), so the tracker knows which peer sent it and no node can announce or lease in
// another's name.
package tracker

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Paths of the tracker's HTTP API.
const (
	// PathAnnounce: POST AnnounceRequest, answered with AnnounceResponse.
	PathAnnounce = "/announce"
	// PathLease: POST LeaseRequest, answered with LeaseResponse.
	PathLease = "/lease"
	// PathBootstrap: GET, answered with BootstrapResponse: peers a node joins the DHT through.
	PathBootstrap = "/bootstrap"
	// PathSwarms: GET, a JSON view of the swarms for operators (SwarmsResponse).
	PathSwarms = "/swarms"
)

// Headers of a signed request. The signature covers SigningBytes(method, path, body).
const (
	HeaderPeer      = "Shoal-Peer"      // the sender's peer ID
	HeaderSignature = "Shoal-Signature" // base64 (standard, padded) of the signature
)

// Limits the tracker enforces; a client stays within them.
const (
	MaxBody          = 1 << 20 // bytes of a request body
	MaxBlobs         = 1024    // blobs in one announce; a node holding more sends several
	MaxAddrs         = 16      // multiaddrs of one node
	MaxAddrLen       = 256     // bytes of one multiaddr
	MaxMembers       = 50      // members returned for one swarm
	MaxClockSkew     = time.Minute
	LeaseTTL         = 30 * time.Second // a lease not renewed within this expires
	DownloadTTL      = 10 * time.Second // a downloading member not announced within this leaves the swarm
	HolderTTL        = 3 * time.Minute  // a holder not announced within this leaves the swarm
	AnnounceDownload = time.Second      // how often a node announces its running downloads, at least
	AnnounceHolding  = time.Minute      // how often a node announces what it holds
	// MaxAnnounceDownload is the longest a tracker lets a node wait between announces of
	// its running downloads (AnnounceResponse.IntervalMillis), however many nodes download
	// at once; a downloading member is kept for DownloadTTL or three intervals, whichever
	// is longer.
	MaxAnnounceDownload = 10 * time.Second
	// Fetchers is how many members of a swarm the tracker names to fetch the blob from the
	// origin (Swarm.Fetchers).
	Fetchers = 3
)

// AnnounceRequest tells the tracker what a node is downloading and holding.
type AnnounceRequest struct {
	// Peer is the sender's peer ID; it must match HeaderPeer and the signature.
	Peer string `json:"peer"`
	// Addrs are the node's libp2p multiaddrs, each ending in /p2p/<Peer>.
	Addrs []string `json:"addrs"`
	// Time is the sender's clock, Unix milliseconds; it must be within MaxClockSkew of the
	// tracker's, so a captured request cannot be replayed later.
	Time  int64       `json:"time"`
	Blobs []BlobState `json:"blobs"`
}

// BlobState is one blob a node downloads or holds.
type BlobState struct {
	Digest digest.Digest `json:"digest"`
	// Size and ChunkSize, once known (0 before). Members of one swarm must agree on both.
	Size      int64 `json:"size,omitempty"`
	ChunkSize int64 `json:"chunkSize,omitempty"`
	// Done is how many bytes the node holds verified or written; Complete that it holds the
	// whole blob, verified.
	Done     int64 `json:"done"`
	Complete bool  `json:"complete,omitempty"`
	// FromOrigin and FromPeers are the bytes the node fetched for it from each, for /swarms.
	FromOrigin int64 `json:"fromOrigin,omitempty"`
	FromPeers  int64 `json:"fromPeers,omitempty"`
	// Gone says the node no longer holds or downloads the blob (evicted, or failed).
	Gone bool `json:"gone,omitempty"`
}

// AnnounceResponse gives, for each blob the node announces as downloading (not Complete, not
// Gone), the other members of its swarm. A node holding a blob needs nobody, and a node
// holding many in large swarms would otherwise get an answer the size of the whole fleet.
type AnnounceResponse struct {
	// Instance identifies this run of the tracker: a client seeing it change knows the
	// tracker restarted and lost its state, and announces everything again at once.
	Instance string  `json:"instance"`
	Swarms   []Swarm `json:"swarms"`
	// IntervalMillis is how long the node waits before it announces its running downloads
	// again: AnnounceDownload, longer while many nodes download at once, so that the
	// tracker's announce load stays bounded however large the fleet (at most
	// MaxAnnounceDownload). 0 (a tracker that does not say): AnnounceDownload.
	IntervalMillis int64 `json:"intervalMillis,omitempty"`
}

// Swarm is the members of one blob's swarm, the asking node left out.
type Swarm struct {
	Digest  digest.Digest `json:"digest"`
	Members []Member      `json:"members"`
	// Fetchers are the swarm's origin fetchers, the asking node among them if it is one:
	// Fetchers of the swarm's first members, those the blob's key weighs most by rendezvous
	// hash (so that one rollout's first nodes do not fetch every layer), each keeping its
	// place while it stays in the swarm. They alone fetch the
	// blob from the origin (under leases, splitting its chunks), and every other member
	// takes it from peers while one of them is live, so the lease requests of a rollout
	// come from a few nodes, not from the whole fleet. Those other than the asking node
	// are also in Members, with their addrs.
	Fetchers []string `json:"fetchers,omitempty"`
}

// Member is one node in a swarm.
type Member struct {
	Peer     string   `json:"peer"`
	Addrs    []string `json:"addrs"`
	Done     int64    `json:"done"`
	Complete bool     `json:"complete,omitempty"`
}

// LeaseRequest asks for, renews, or gives back the lease on one chunk to fetch from the
// origin. The sender must be a member of the blob's swarm (announced, not Gone).
type LeaseRequest struct {
	Peer      string        `json:"peer"`
	Time      int64         `json:"time"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	ChunkSize int64         `json:"chunkSize"`
	Chunk     int           `json:"chunk"`
	// Release gives the lease back; with Done, the chunk arrived and is verified-in-place at
	// the sender, so it is not leased again while the sender stays in the swarm.
	Release bool `json:"release,omitempty"`
	Done    bool `json:"done,omitempty"`
}

// LeaseResponse answers a LeaseRequest.
type LeaseResponse struct {
	// Granted: the sender holds the lease for TTLMillis from now (a renewal extends it).
	Granted   bool  `json:"granted"`
	TTLMillis int64 `json:"ttlMillis,omitempty"`
	// Holder, when not granted, is the member that holds the lease or has the chunk: the
	// sender gets the chunk from it instead of the origin.
	Holder string `json:"holder,omitempty"`
}

// BootstrapResponse lists peers to join the DHT through: the tracker itself first, then
// some members seen recently.
type BootstrapResponse struct {
	Peers []string `json:"peers"`
}

// SwarmsResponse is GET /swarms: what is being distributed right now.
type SwarmsResponse struct {
	Instance string      `json:"instance"`
	Swarms   []SwarmView `json:"swarms"`
}

// SwarmView is one swarm for operators.
type SwarmView struct {
	Digest     digest.Digest `json:"digest"`
	Size       int64         `json:"size"`
	Members    int           `json:"members"`
	Complete   int           `json:"complete"`
	Progress   float64       `json:"progress"` // mean fraction done over members, 0..1
	FromOrigin int64         `json:"fromOrigin"`
	FromPeers  int64         `json:"fromPeers"`
	Leases     int           `json:"leases"` // chunks leased to a member right now
}

// SigningBytes is what a request's signature covers: a fixed prefix, the method, the path
// and the body, so a signature for one request cannot be used for another.
func SigningBytes(method, path string, body []byte) []byte {
	var b bytes.Buffer
	b.WriteString("shoal-tracker/1\n")
	b.WriteString(method)
	b.WriteByte(' ')
	b.WriteString(path)
	b.WriteByte('\n')
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteByte('\n')
	b.Write(body)
	return b.Bytes()
}

// Signer signs requests with a node's identity key; p2p.Signer is one.
type Signer interface {
	ID() string
	Sign(data []byte) ([]byte, error)
}

// Verifier checks that sig is peer's signature of data; p2p.VerifySignature is one.
type Verifier func(peer string, data, sig []byte) error

// Sign makes req, whose body is body, a signed request from signer's peer (a p2p.Signer):
// the JSON content type, HeaderPeer and HeaderSignature over SigningBytes.
func Sign(req *http.Request, signer Signer, body []byte) error {
	sig, err := signer.Sign(SigningBytes(req.Method, req.URL.Path, body))
	if err != nil {
		return fmt.Errorf("sign %s: %w", req.URL.Path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderPeer, signer.ID())
	req.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	return nil
}

// Verify checks the signature of a request to path, whose headers are h and body is body,
// with verify, and returns the peer that signed it. path is the route the request was
// served under, so a signature for one path is refused on another.
func Verify(h http.Header, method, path string, body []byte, verify Verifier) (string, error) {
	peer, sig64 := h.Get(HeaderPeer), h.Get(HeaderSignature)
	if peer == "" || sig64 == "" {
		return "", fmt.Errorf("missing %s or %s header", HeaderPeer, HeaderSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(sig64)
	if err != nil {
		return "", fmt.Errorf("%s: not base64", HeaderSignature)
	}
	if err := verify(peer, SigningBytes(method, path, body), sig); err != nil {
		return "", fmt.Errorf("signature: %w", err)
	}
	return peer, nil
}

// Decode decodes raw, which must be exactly one JSON value with only known fields, into v:
// requests and answers alike are input from outside.
func Decode(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

// ParseURL checks a tracker's base URL (http or https with a host, no query) and returns it
// without a trailing slash.
func ParseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("tracker URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("tracker URL %q: want http[s]://host[:port][/path]", raw)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}
