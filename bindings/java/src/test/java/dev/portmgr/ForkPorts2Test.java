package dev.portmgr;

/** Fork 2 of 4: see ForkPortsBase. */
class ForkPorts2Test extends ForkPortsBase {
    @Override
    int fork() {
        return 2;
    }
}
