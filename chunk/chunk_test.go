package chunk

import (
	"errors"
	"math"
	"testing"
)

func TestCountAndLen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		size, chunkSize int64
		count           int64
		last            int64
	}{
		{0, MinSize, 0, 0},
		{1, MinSize, 1, 1},
		{MinSize, MinSize, 1, MinSize},
		{MinSize + 1, MinSize, 2, 1},
		{10 * DefaultSize, DefaultSize, 10, DefaultSize},
		{math.MaxInt64, MaxSize, math.MaxInt64/MaxSize + 1, math.MaxInt64 % MaxSize},
	}
	for _, tt := range tests {
		if got := Count(tt.size, tt.chunkSize); got != tt.count {
			t.Errorf("Count(%d, %d) = %d, want %d", tt.size, tt.chunkSize, got, tt.count)
		}
		if tt.count == 0 || tt.count > MaxCount {
			continue
		}
		if got := Len(tt.size, tt.chunkSize, int(tt.count-1)); got != tt.last {
			t.Errorf("Len(%d, %d, last) = %d, want %d", tt.size, tt.chunkSize, got, tt.last)
		}
	}
}

func TestCheckSize(t *testing.T) {
	t.Parallel()
	for _, size := range []int64{MinSize, DefaultSize, MaxSize} {
		if err := CheckSize(size); err != nil {
			t.Errorf("CheckSize(%d) = %v, want nil", size, err)
		}
	}
	for _, size := range []int64{0, -1, MinSize - 1, MaxSize + 1} {
		if err := CheckSize(size); !errors.Is(err, ErrSize) {
			t.Errorf("CheckSize(%d) = %v, want ErrSize", size, err)
		}
	}
}
