// expect: Date is not available in workflows
export const meta = { name: "error", description: "Meets one error message" };
export default Date.now();
