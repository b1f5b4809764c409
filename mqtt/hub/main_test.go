package hub

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: the session's, paho's and the
// emulator's all end with Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
