// Package rendezvous is rendezvous (highest random weight) hashing: every node computes the
// same weight for a key, a member and an index, so nodes that see the same members agree,
// without talking, on which member a key belongs to.
package rendezvous

import "hash/fnv"

// Weight is member's weight for index of key: the member with the highest weight wins.
func Weight(key, member string, index uint64) uint64 {
	return SeedOf(key, member).Weight(index)
}

// Seed is what a key and a member contribute to every index's weight. A caller weighing
// many indexes for one member (every chunk of a blob) hashes the strings once.
type Seed uint64

// SeedOf returns the seed of key and member.
func SeedOf(key, member string) Seed {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(member))
	return Seed(h.Sum64())
}

// Weight is the weight of index: the index-th output of a splitmix64 stream started at the
// seed, whose finalizer spreads FNV's weak low bits and keeps the weights of neighbouring
// indexes uncorrelated.
func (s Seed) Weight(index uint64) uint64 {
	x := uint64(s) + (index+1)*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
