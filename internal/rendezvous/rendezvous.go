// Package rendezvous is rendezvous (highest random weight) hashing: every node computes the
// same weight for a key, a member and an index, so nodes that see the same members agree,
// without talking, on which member a key belongs to.
package rendezvous

import (
	"encoding/binary"
	"hash/fnv"
)

// Weight is member's weight for index of key: the member with the highest weight wins.
func Weight(key, member string, index uint64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(member))
	h.Write(binary.BigEndian.AppendUint64(nil, index))
	// splitmix64 finalizer: FNV's low bits alone spread poorly, and weights of similar
	// inputs would be correlated.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
