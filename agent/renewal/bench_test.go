package renewal_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

func BenchmarkDecide(b *testing.B) {
	cert := certFor(30 * day)
	p := renewal.DefaultPolicy()
	draw := renewal.DrawFor([]byte("device secret"), []byte("certificate fingerprint"))
	now := issued.Add(3 * day)
	b.ReportAllocs()
	for b.Loop() {
		if d := renewal.Decide(cert, now, p, draw, built); d.Action != renewal.Wait {
			b.Fatalf("action %v", d.Action)
		}
	}
}

func BenchmarkNextRetry(b *testing.B) {
	cert := certFor(30 * day)
	src := rand.NewPCG(1, 2)
	now := issued.Add(3 * day)
	b.ReportAllocs()
	for b.Loop() {
		if r := renewal.NextRetry(cert, now, 5, 0, src); r.Delay < time.Minute {
			b.Fatalf("wait %v", r.Delay)
		}
	}
}

func BenchmarkDrawFor(b *testing.B) {
	seed, fp := []byte("device secret"), make([]byte, 32)
	b.ReportAllocs()
	for b.Loop() {
		renewal.DrawFor(seed, fp)
	}
}
