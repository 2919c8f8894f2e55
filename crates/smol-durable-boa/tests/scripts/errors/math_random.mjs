// expect: Math.random is not available in workflows: workflows must replay identically; pass seeds in args
export const meta = { name: "error", description: "Meets one error message" };
export default Math.random();
