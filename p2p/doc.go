// Package p2p is shoal's peer-to-peer layer: the libp2p host a node runs, the
// Kademlia DHT through which nodes announce and find the blobs they hold, the
// chunk exchange protocol through which they pass chunks of blobs to each
// other, and the mapping between OCI digests and DHT keys.
//
// It is the only package that imports go-libp2p, go-libp2p-kad-dht, go-cid and
// the multiformats libraries; its API speaks digest.Digest and plain strings
// so the rest of shoal stays independent of them.
package p2p
