export const meta = { name: "child-thrower", description: "Child workflow that throws" };

log("child about to throw");
throw new Error("child exploded");
export default "unreachable";
