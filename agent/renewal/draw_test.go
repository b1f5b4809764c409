package renewal_test

import (
	"math"
	"testing"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

func TestDrawFor(t *testing.T) {
	seed, fp := []byte("device secret"), []byte("certificate fingerprint")
	d := renewal.DrawFor(seed, fp)
	// A known answer: changing the derivation would move every deployed device's renewal time on
	// upgrade, so it should not change by accident.
	if d != 0xe64ffe3e39b3356a {
		t.Errorf("DrawFor = %#x, want 0xe64ffe3e39b3356a", uint64(d))
	}
	if renewal.DrawFor(seed, fp) != d {
		t.Error("DrawFor is not deterministic")
	}
	if renewal.DrawFor([]byte("other device"), fp) == d {
		t.Error("another device's seed gives the same draw")
	}
	if renewal.DrawFor(seed, []byte("next certificate")) == d {
		t.Error("the next certificate gives the same draw, so a device would renew at the same point every time")
	}
	if renewal.DrawFor(nil, nil) == renewal.DrawFor(nil, []byte{0}) {
		t.Error("an empty seed should still separate certificates")
	}
}

func TestDrawAt(t *testing.T) {
	tests := []struct {
		f    float64
		want renewal.Draw
	}{
		{0, 0},
		{-1, 0},
		{math.NaN(), 0},
		{0.5, 1 << 63},
		{0.25, 1 << 62},
		{1, math.MaxUint64},
		{2, math.MaxUint64},
		{math.Inf(1), math.MaxUint64},
	}
	for _, tt := range tests {
		if got := renewal.DrawAt(tt.f); got != tt.want {
			t.Errorf("DrawAt(%v) = %#x, want %#x", tt.f, uint64(got), uint64(tt.want))
		}
	}
	if renewal.DrawAt(math.Nextafter(1, 0)) == math.MaxUint64 {
		t.Error("the largest fraction below 1 should stay below the largest draw")
	}
}
