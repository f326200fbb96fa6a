package p7

import (
	"testing"

	"manybins/common"
)

func TestPorts(t *testing.T) { common.Run(t) }
