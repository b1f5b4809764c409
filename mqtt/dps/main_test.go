package dps

import (
	"testing"

	"go.uber.org/goleak"
)

// Every Register must leave nothing running behind it: no paho goroutines,
// no timers waiting on a cancelled registration.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
