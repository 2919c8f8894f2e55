// expect: deadlock: the workflow awaits a promise that can never settle: no agent, sleep or workflow call is pending and nothing else can resolve it
// kind: deadlock
// calls: 1
export const meta = { name: "error", description: "Meets one error message" };
await agent("first");
await new Promise(() => {});
export default 1;
