//go:build race

package workflow

// The race detector's shadow memory grows with the heap.
const raceFactor = 8
