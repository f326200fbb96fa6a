package dev.portmgr;

/** Fork 1 of 4: see ForkPortsBase. */
class ForkPorts1Test extends ForkPortsBase {
    @Override
    int fork() {
        return 1;
    }
}
