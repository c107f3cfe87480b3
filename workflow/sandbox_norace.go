//go:build !race

package workflow

const raceFactor = 1
