package emulator

import (
	"context"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
)

// dps is the DPS front-end. PLACEHOLDER: being written; refuses every connection.
type dps struct{ e *Emulator }

func newDPS(e *Emulator) *dps { return &dps{e: e} }

func (d *dps) Connect(context.Context, *mqttsrv.ConnectRequest) (mqttsrv.Session, mqttsrv.ConnackCode) {
	return nil, mqttsrv.RefusedServerUnavailable
}

func (d *dps) close() {}
