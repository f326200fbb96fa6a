package dev.portmgr;

/** Fork 4 of 4: see ForkPortsBase. */
class ForkPorts4Test extends ForkPortsBase {
    @Override
    int fork() {
        return 4;
    }
}
