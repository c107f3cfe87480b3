//go:build race

package sandbox

// The race detector's shadow memory grows with the heap.
const raceFactor = 8
