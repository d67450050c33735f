package benchstat

import "testing"

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{0.4}, 0.4},
		{[]float64{0.53, 0.40, 0.51}, 0.51},
		{[]float64{2, 1, 4, 3}, 2.5},
	} {
		in := append([]float64(nil), c.in...)
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
		for i := range in {
			if in[i] != c.in[i] {
				t.Errorf("Median reordered its input: %v, was %v", c.in, in)
			}
		}
	}
	if got := Join([]float64{1.5, 0.25}, "%.2f×"); got != "1.50×, 0.25×" {
		t.Errorf("Join = %q", got)
	}
}
