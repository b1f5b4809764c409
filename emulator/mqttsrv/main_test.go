package mqttsrv

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: the server's, the clients' and the sessions'.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
