// Package benchstat holds the arithmetic the benchmarks under bench/ share
// for their repeated rounds.
package benchstat

import (
	"fmt"
	"slices"
	"strings"
)

// Median returns the middle of xs (the mean of the two middle ones when
// their number is even); 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Join formats xs in their order, each with format, separated by ", ".
func Join(xs []float64, format string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(s, ", ")
}
