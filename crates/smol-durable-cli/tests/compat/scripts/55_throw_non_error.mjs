export const meta = { name: "throw-non-error", description: "Throwing a plain object (not an Error) fails the run" };

log("about to throw an object");
throw { code: 7, reason: "not an Error" };
export default "unreachable";
