package registryapi

import (
	"errors"
	"testing"
)

func TestParseRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header        string
		size          int64
		start, length int64
		partial       bool
		err           error
	}{
		{"", 100, 0, 100, false, nil},
		{"bytes=0-0", 100, 0, 1, true, nil},
		{"bytes=500-1499", 5000, 500, 1000, true, nil},
		{"bytes=500-", 5000, 500, 4500, true, nil},
		{"bytes=-500", 5000, 4500, 500, true, nil},
		{"bytes=2000-5000", 3000, 2000, 1000, true, nil},
		{"bytes=0-9223372036854775807", 10, 0, 10, true, nil},
		{"bytes=-9223372036854775807", 10, 0, 10, true, nil},
		{"bytes=9-", 10, 9, 1, true, nil},
		{"bytes=007-008", 10, 7, 2, true, nil},
		{"BYTES=1-1", 10, 1, 1, true, nil},
		{"bytes=\t1-1 ,", 10, 1, 1, true, nil},
		{"bytes=0-1,5-6", 10, 0, 10, false, nil},
		{"bytes=0-1, -2", 10, 0, 10, false, nil},
		{"bytes=-5", 0, 0, 0, false, nil},

		{"bytes=10-", 10, 0, 0, false, ErrRangeNotSatisfiable},
		{"bytes=5000-10000", 3000, 0, 0, false, ErrRangeNotSatisfiable},
		{"bytes=-0", 10, 0, 0, false, ErrRangeNotSatisfiable},
		{"bytes=0-", 0, 0, 0, false, ErrRangeNotSatisfiable},
		{"bytes=0-0", 0, 0, 0, false, ErrRangeNotSatisfiable},

		{"bytes=500-0", 5000, 0, 0, false, ErrRangeInvalid},
		{"bytes=abc", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=a-1", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=1-a", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=1", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=-", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=,", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes 0-1", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes =0-1", 10, 0, 0, false, ErrRangeInvalid},
		{"items=0-1", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=1 -2", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=+1-2", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=1-+2", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=0x1-2", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=1-2-3", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=9223372036854775808-", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=-9223372036854775808", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=0-1,x", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=0-1;bytes=2-3", 10, 0, 0, false, ErrRangeInvalid},
		{"bytes=0-1", -1, 0, 0, false, ErrRangeNotSatisfiable},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			t.Parallel()
			start, length, partial, err := ParseRange(tt.header, tt.size)
			if !errors.Is(err, tt.err) || err == nil && tt.err != nil {
				t.Fatalf("ParseRange(%q, %d) error = %v, want %v", tt.header, tt.size, err, tt.err)
			}
			if err != nil {
				return
			}
			if start != tt.start || length != tt.length || partial != tt.partial {
				t.Errorf("ParseRange(%q, %d) = %d, %d, %v, want %d, %d, %v",
					tt.header, tt.size, start, length, partial, tt.start, tt.length, tt.partial)
			}
		})
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"", "bytes=0-0", "bytes=5-", "bytes=-5", "bytes=0-1,2-3", "bytes=abc",
		"bytes=9223372036854775807-", "bytes=-9223372036854775807", "items=0-1", "bytes= 1-2 ,,"} {
		for _, size := range []int64{0, 1, 10, 1 << 40} {
			f.Add(s, size)
		}
	}
	f.Fuzz(func(t *testing.T, header string, size int64) {
		start, length, partial, err := ParseRange(header, size)
		if size < 0 {
			if err == nil {
				t.Fatalf("ParseRange(%q, %d) accepted a negative size", header, size)
			}
			return
		}
		_, specErr := parseRangeSpec(header)
		switch {
		case err == nil:
			if specErr != nil {
				t.Fatalf("ParseRange(%q) succeeded but the header does not parse: %v", header, specErr)
			}
		case errors.Is(err, ErrRangeInvalid):
			if specErr == nil {
				t.Fatalf("ParseRange(%q, %d) = %v, but the header parses", header, size, err)
			}
			return
		case errors.Is(err, ErrRangeNotSatisfiable):
			if specErr != nil {
				t.Fatalf("ParseRange(%q, %d) = %v, but the header does not parse", header, size, err)
			}
			return
		default:
			t.Fatalf("ParseRange(%q, %d) = %v: unknown error", header, size, err)
		}
		if start < 0 || length < 0 || start > size || length > size-start {
			t.Fatalf("ParseRange(%q, %d) = %d, %d: outside the content", header, size, start, length)
		}
		if partial && length == 0 {
			t.Fatalf("ParseRange(%q, %d) = partial with no bytes", header, size)
		}
		if !partial && (start != 0 || length != size) {
			t.Fatalf("ParseRange(%q, %d) = %d, %d, not partial, want the whole content", header, size, start, length)
		}
	})
}
