package store

import (
	"testing"
	"time"
)

// BenchmarkCommit measures a status update on a device's state: one manifest
// write with its two fsyncs. It is dominated by the disk, which is the point:
// run it on the target's flash to know what a commit costs there.
func BenchmarkCommit(b *testing.B) {
	s := openStore(b, stateDir(b), Options{})
	cur := writeIdentity(b, s, "A")
	if err := s.Commit(&Manifest{IDScope: "0ne00000001", Current: &cur}); err != nil {
		b.Fatal(err)
	}
	at := fixedNow
	for b.Loop() {
		at = at.Add(time.Second)
		err := s.Update(func(m *Manifest) error {
			m.LastError = &Failure{At: at, Message: "connect to hub: timeout", Hint: "check the network", Code: "timeout"}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
